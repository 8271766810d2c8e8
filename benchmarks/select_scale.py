"""``alcli select`` at scale: the warm 1,000,000-item pool, the coreset race, a row per strategy.

In one run, printing JSON:

- ``warm_select_1m_s``: wall time of ``alcli select --strategy margin --budget 10000`` as a
  subprocess over a 1,000,000-item pool whose 512-d embeddings are already cached (put there
  through the cache API, then compacted as ``alcli embed`` leaves them), 10 classes, 2,000
  labeled. The pool is an S3-Inventory-style CSV manifest (uri, size, last_modified, etag),
  so resolving it needs no request; the images themselves never exist (nothing reads them).
- the strategy rows and the coreset comparison with scikit-activeml, from
  ``strategies_scale.py`` (same arrays, same run), unless ``--skip-strategies``.

    python benchmarks/select_scale.py --json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["--model", "resnet18", "--weights", "none"]  # a 512-d backbone's fingerprint


def build_pool(work: Path, n: int, dim: int, classes: int, labeled: int) -> dict[str, float]:
    """Manifest, labels file and cached embeddings for an n-item pool; returns timings."""
    from alcli.cache import EmbeddingCache
    from alcli.models import model_fingerprint
    from alcli.sources import resolve_pool

    timings = {}
    started = time.perf_counter()
    manifest = work / "pool.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "size", "last_modified", "etag"])
        for i in range(n):
            writer.writerow(
                [
                    f"s3://alcli-bench/pool/{i:07d}.jpg",
                    20_000 + i % 977,
                    "2026-11-01T00:00:00Z",
                    f"{i:032x}",
                ]
            )
    pool = resolve_pool(str(manifest))
    timings["manifest_s"] = time.perf_counter() - started

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 1.0, (classes, dim)).astype(np.float32) * 3
    y = rng.integers(0, classes, n)
    fingerprint = model_fingerprint("resnet18", "none", None)
    keys = [item.key for item in pool.items]
    chunk = 65_536
    with EmbeddingCache(work / "cache", durable=False) as store:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            X = centers[y[start:stop]] + rng.normal(0.0, 1.0, (stop - start, dim)).astype(
                np.float32
            )
            store.store(fingerprint, keys[start:stop], X)
        store.compact(fingerprint)
    timings["fill_s"] = time.perf_counter() - started

    picked = np.sort(rng.choice(n, labeled, replace=False))
    with (work / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "label"])
        writer.writerows((pool.items[i].uri, f"class{y[i]}") for i in picked)
    return timings


def warm_select(work: Path, budget: int) -> tuple[float, int]:
    """Wall seconds of the CLI as a user runs it, and how many URIs it printed."""
    env = {**os.environ, "ALCLI_CACHE_DIR": str(work / "cache")}
    cmd = [
        str(ROOT / ".venv" / "bin" / "alcli"),
        "select",
        str(work / "pool.csv"),
        *MODEL,
        "--strategy",
        "margin",
        "--budget",
        str(budget),
        "--labeled",
        str(work / "labels.csv"),
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"alcli select failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, len(done.stdout.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2, help="warm runs; the best is kept")
    parser.add_argument("--skip-strategies", action="store_true")
    parser.add_argument("--work", default="", help="keep the pool here (reused if present)")
    args = parser.parse_args()

    result: dict[str, object] = {"n": args.n, "dim": args.dim, "budget": args.budget}
    with tempfile.TemporaryDirectory(prefix="alcli-select-scale-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "labels.csv").exists():
            setup = build_pool(work, args.n, args.dim, 10, 2000)
            result["setup"] = {k: round(v, 2) for k, v in setup.items()}
        runs = [warm_select(work, args.budget) for _ in range(args.repeats)]
        result["warm_select_runs_s"] = [round(s, 2) for s, _ in runs]
        result["warm_select_1m_s"] = round(min(s for s, _ in runs), 2)
        result["picked"] = runs[0][1]
    if not args.skip_strategies:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "strategies_scale.py"), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"strategies_scale.py failed: {done.stderr.strip()[-500:]}")
        result.update(json.loads(done.stdout))
    result["machine"] = {"cores": os.cpu_count(), "loadavg": os.getloadavg()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
