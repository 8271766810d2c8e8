"""How fast the strategy zoo is at scale, and how alcli's coreset compares with scikit-activeml.

Two measurements:

* ``coreset``: 10,000 greedy k-center picks from 40,000 x 512 float32 embeddings (10 Gaussian
  blobs, drawn like scikit-learn's ``make_blobs`` defaults: centres uniform in [-10, 10]^d,
  unit standard deviation), 1,000 of them labeled, by alcli and by scikit-activeml's
  ``CoreSet`` on the same arrays in the same run. scikit-activeml is not a dependency of
  alcli: it lives in its own virtualenv (``benchmarks/.work/skal-venv``, created with
  ``python -m venv`` + pip when missing, or pass ``--skactiveml-python``) and runs in a
  subprocess; arrays travel as ``.npy`` files. Both timings cover the query call only.
* ``zoo``: every registered strategy at 100,000 x 512 float32 (10 classes, 1,000 labeled,
  committee K = 5), budget 1,000, each in a fresh subprocess: wall seconds of the ``run``
  call, and the peak resident memory it added (the kernel's high-water mark VmHWM, reset
  through /proc/self/clear_refs just before the call, minus the resident size then, with
  the inputs already loaded).

``--json`` prints one JSON object; otherwise a table. Everything is seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
SKAL_VENV = WORK / "skal-venv"

SKAL_QUERY = """
import json, sys, time
import numpy as np
from skactiveml.pool import CoreSet
from skactiveml.utils import MISSING_LABEL

x = np.load(sys.argv[1])
labeled = np.load(sys.argv[2])
budget = int(sys.argv[3])
y = np.full(x.shape[0], MISSING_LABEL, dtype=float)
y[labeled] = 0.0  # CoreSet only reads which items are labeled, not the labels
start = time.perf_counter()
picks = CoreSet(random_state=0).query(x, y, batch_size=budget)
seconds = time.perf_counter() - start
np.save(sys.argv[4], np.asarray(picks, dtype=np.int64))
print(json.dumps({"seconds": seconds}))
"""


def make_blobs(
    n: int, d: int, centres: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs like sklearn's make_blobs defaults (box [-10, 10], std 1), float32."""
    centre_points = rng.uniform(-10.0, 10.0, size=(centres, d))
    labels = rng.permutation(np.arange(n) % centres)
    x = centre_points[labels] + rng.standard_normal((n, d))
    return x.astype(np.float32), labels


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def zoo_inputs(directory: Path, n: int, d: int, classes: int, labeled: int, k: int) -> None:
    """Embeddings as blobs; probabilities from noisy class scores, so some are uncertain."""
    rng = np.random.default_rng(20240)
    x, y = make_blobs(n, d, classes, rng)
    onehot = np.eye(classes)[y]
    probs = softmax(2.0 * onehot + rng.standard_normal((n, classes)))
    committee = softmax(2.0 * onehot[None] + rng.standard_normal((k, n, classes)))
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "embeddings.npy", x)
    np.save(directory / "probs.npy", probs)
    np.save(directory / "committee.npy", committee)
    np.save(directory / "labeled.npy", np.sort(rng.choice(n, size=labeled, replace=False)))


def worker(name: str, directory: Path, budget: int) -> dict[str, Any]:
    """One strategy in this (fresh) process: seconds and added peak RSS, as ``alcli bench``
    measures them (``alcli.bench.time_strategy``: VmHWM reset just before the call)."""
    from alcli.bench import time_strategy

    inputs = {
        key: np.load(directory / f"{key}.npy")
        for key in ("embeddings", "probs", "committee", "labeled")
    }
    timing = time_strategy(name, budget, inputs)
    if timing.seconds is None:
        raise SystemExit(f"{name}: {timing.error}")
    if timing.peak_extra_mib is None:
        raise SystemExit("peak memory needs Linux's /proc/self/clear_refs and VmHWM")
    return {
        "name": name,
        "seconds": round(timing.seconds, 3),
        "peak_extra_mib": timing.peak_extra_mib,
        "picks": timing.picks,
    }


def run_zoo(args: argparse.Namespace) -> list[dict[str, Any]]:
    import alcli.strategies as strategies

    directory = WORK / f"zoo-{args.zoo_n}"
    if not (directory / "labeled.npy").exists():
        zoo_inputs(directory, args.zoo_n, 512, 10, 1_000, 5)
    names = args.strategies or [info.name for info in strategies.available()]
    rows = []
    for name in names:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--data", str(directory)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {name}: {row['seconds']} s, +{row['peak_extra_mib']} MiB", file=sys.stderr)
    return rows


def skactiveml_python(args: argparse.Namespace) -> Path:
    if args.skactiveml_python:
        return Path(args.skactiveml_python)
    python = SKAL_VENV / "bin" / "python"
    if not python.exists():
        print("creating the scikit-activeml virtualenv (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(SKAL_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "scikit-activeml"], check=True
        )
    return python


def run_coreset(args: argparse.Namespace) -> dict[str, Any]:
    import alcli.strategies as strategies

    directory = WORK / "coreset-40k"
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    x, _ = make_blobs(40_000, 512, 10, rng)
    labeled = np.sort(rng.choice(x.shape[0], size=1_000, replace=False))
    np.save(directory / "x.npy", x)
    np.save(directory / "labeled.npy", labeled)

    start = time.perf_counter()
    ours = strategies.run("coreset", budget=args.coreset_budget, embeddings=x, labeled=labeled)
    ours_s = time.perf_counter() - start
    print(f"  alcli coreset: {ours_s:.2f} s", file=sys.stderr)
    result: dict[str, Any] = {"coreset_40k_s": round(ours_s, 3)}
    if args.skip_skactiveml:
        return result

    script = directory / "skal_query.py"
    script.write_text(SKAL_QUERY)
    out = subprocess.run(
        [
            str(skactiveml_python(args)),
            str(script),
            str(directory / "x.npy"),
            str(directory / "labeled.npy"),
            str(args.coreset_budget),
            str(directory / "skal_picks.npy"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs_s = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    theirs = np.load(directory / "skal_picks.npy")
    overlap = np.intersect1d(ours, theirs).size / max(1, args.coreset_budget)
    print(f"  scikit-activeml CoreSet: {theirs_s:.2f} s", file=sys.stderr)
    result.update(
        skactiveml_coreset_40k_s=round(theirs_s, 3),
        coreset_speedup_vs_skactiveml=round(theirs_s / ours_s, 2),
        coreset_overlap=round(overlap, 4),
        coreset_same_order_prefix=int(
            np.argmax(np.r_[ours != theirs, True]) if ours.size == theirs.size else 0
        ),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", choices=("coreset", "zoo"), help="run one measurement")
    parser.add_argument("--strategies", nargs="*", help="zoo: these strategies only")
    parser.add_argument("--zoo-n", type=int, default=100_000, help="zoo pool size")
    parser.add_argument("--coreset-budget", type=int, default=10_000)
    parser.add_argument("--skactiveml-python", help="python of an env with scikit-activeml")
    parser.add_argument("--skip-skactiveml", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), 1_000)))
        return

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "numpy": np.__version__,
    }
    if args.only in (None, "coreset"):
        report.update(run_coreset(args))
    if args.only in (None, "zoo"):
        report[f"strategies_{args.zoo_n}x512_budget1000"] = run_zoo(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, list):
            print(f"{key}:")
            for row in value:
                print(
                    f"  {row['name']:<16} {row['seconds']:>8.2f} s "
                    f"{row['peak_extra_mib']:>9.1f} MiB"
                )
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
