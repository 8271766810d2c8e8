"""What streaming out of core changes in the picks (issue 16), on the real MNIST features.

Pool = the 50,000 MNIST training digits embedded by MobileNetV2 (1,280-d, the shared cache of
``benchmarks/mnist_features.py``), eval = the 10,000 test digits.

- ``float16``: picks from float16-stored embeddings (what ``alcli embed --storage float16``
  keeps) against float32, per strategy: overlap of the picked sets (1,000 labeled, budget 1,000).
- ``approximation``: the strategies that run on candidates when the pool does not fit the
  memory setting, forced here by a ``--memory`` that holds ``--fraction`` of the pool: overlap
  with the exact picks, and label efficiency (test accuracy of the head after each round of
  ``--round`` picks from ``--initial`` random labels), exact vs approximated, per seed.

    python benchmarks/scale_agreement.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcli import selection, strategies  # noqa: E402
from alcli.learner import fit_scaler, train_head  # noqa: E402
from alcli.rows import ArrayRows  # noqa: E402
from mnist_features import mnist_features  # noqa: E402


def picks(name: str, X: object, uris: list[str], labels: dict[str, str], budget: int, seed: int):
    return selection.pick(
        strategy=name, budget=budget, uris=uris, embeddings=X, labels=labels, seed=seed
    )


def float16_rows(pool, names: list[str], budget: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    labeled = rng.choice(len(pool.uris), 1000, replace=False)
    labels = {pool.uris[i]: str(pool.y[i]) for i in labeled}
    X16 = pool.X.astype(np.float16).astype(np.float32)
    rows = []
    for name in names:
        a = picks(name, pool.X, pool.uris, labels, budget, 0)
        b = picks(name, X16, pool.uris, labels, budget, 0)
        overlap = len(np.intersect1d(a.rows, b.rows)) / max(1, len(a.rows))
        rows.append({"strategy": name, "overlap": round(overlap, 4)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def efficiency(pool, test, name: str, memory: int | None, args, seed: int) -> list[float]:
    """Test accuracy after the initial set and each round, picks exact (memory None) or not."""
    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(pool.uris), args.initial, replace=False))
    scaler = fit_scaler(pool.X)
    accs = []
    for rnd in range(args.rounds + 1):
        head = train_head(pool.X[labeled], pool.y[labeled], scaler=scaler)
        accs.append(round(float((head.predict(test.X) == test.y).mean()), 4))
        if rnd == args.rounds:
            break
        labels = {pool.uris[i]: str(pool.y[i]) for i in labeled}
        X = pool.X if memory is None else ArrayRows(pool.X, memory=memory)
        chosen = picks(name, X, pool.uris, labels, args.round, seed * 100 + rnd)
        labeled += [int(r) for r in chosen.rows]
    return accs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.1, help="of the pool in memory")
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--skip-float16", action="store_true")
    args = parser.parse_args()
    pool, test = mnist_features()
    result: dict[str, object] = {"pool": len(pool.uris), "dim": int(pool.X.shape[1])}
    exact = [s.name for s in strategies.available() if s.scaling.exact]
    approx = [s.name for s in strategies.available() if not s.scaling.exact]
    if not args.skip_float16:
        started = time.perf_counter()
        result["float16"] = float16_rows(pool, exact + approx, args.budget)
        result["float16_s"] = round(time.perf_counter() - started, 1)
    # memory such that half of it (what a strategy may gather) holds ``fraction`` of the pool
    memory = int(pool.X.nbytes * args.fraction * 2)
    result["memory_bytes"] = memory
    rows = []
    for name in approx:
        row: dict[str, object] = {"strategy": name}
        rng = np.random.default_rng(0)
        labeled = rng.choice(len(pool.uris), 1000, replace=False)
        labels = {pool.uris[i]: str(pool.y[i]) for i in labeled}
        started = time.perf_counter()
        a = picks(name, pool.X, pool.uris, labels, args.round, 0)
        row["exact_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        b = picks(name, ArrayRows(pool.X, memory=memory), pool.uris, labels, args.round, 0)
        row["approx_s"] = round(time.perf_counter() - started, 2)
        row["method"] = b.method
        row["overlap"] = round(len(np.intersect1d(a.rows, b.rows)) / max(1, len(a.rows)), 4)
        curves_exact = [efficiency(pool, test, name, None, args, s) for s in range(args.seeds)]
        curves_approx = [efficiency(pool, test, name, memory, args, s) for s in range(args.seeds)]
        row["acc_exact"] = np.mean(curves_exact, axis=0).round(4).tolist()
        row["acc_approx"] = np.mean(curves_approx, axis=0).round(4).tolist()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    result["approximation"] = rows
    result["machine"] = {"cores": os.cpu_count(), "loadavg": os.getloadavg()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
