"""``alcli select`` at scale: the warm 1,000,000-item pool, the coreset race, a row per strategy.

In one run, printing JSON:

- ``warm_select_1m_s``: wall time of ``alcli select --strategy margin --budget 10000`` as a
  subprocess over a 1,000,000-item pool whose 512-d embeddings are already cached (put there
  through the cache API, then compacted as ``alcli embed`` leaves them), 10 classes, 2,000
  labeled. The pool is an S3-Inventory-style CSV manifest (uri, size, last_modified, etag),
  so resolving it needs no request; the images themselves never exist (nothing reads them).
- the strategy rows and the coreset comparison with scikit-activeml, from
  ``strategies_scale.py`` (same arrays, same run), unless ``--skip-strategies``.

Out of core (issue 16): ``--n 10000000 --dim 512`` writes 10M synthetic blob rows into a real
cache as float16 (``--storage``; float16 by default from 5M items), 1,000 labeled, in 1M-row
segments (a compaction would rewrite 10 GB for nothing the reader needs), and reports
``warm_select_10m_margin_s`` and ``peak_rss_gib`` (the CLI process's maximum resident set,
from ``/usr/bin/time``) for ``alcli select --memory 4GiB``, then with ``--strategy-rows`` a row per
strategy (seconds, peak RSS, whether the picks were exact, how) at ``--strategy-budget``.
A size whose cache would not fit ``--max-disk-gib`` is skipped, saying why.

    python benchmarks/select_scale.py --json
    python benchmarks/select_scale.py --n 10000000 --dim 512 --labeled 1000 --json
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


def write_manifest(manifest: Path, n: int) -> None:
    """An S3-Inventory-style CSV: uri, size, last_modified, etag (no image exists)."""
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


def build_pool(
    work: Path,
    n: int,
    dim: int,
    classes: int,
    labeled: int,
    storage: str = "float32",
    segment_rows: int = 65_536,
    compact: bool = True,
) -> dict[str, float]:
    """Manifest, labels file and cached embeddings for an n-item pool; returns timings."""
    from alcli.cache import EmbeddingCache, manifest_memo_dir
    from alcli.models import model_fingerprint
    from alcli.sources import resolve_pool

    timings = {}
    started = time.perf_counter()
    manifest = work / "pool.csv"
    if not manifest.exists():  # (kept from an interrupted build)
        write_manifest(manifest, n)
    # Resolved with the cache's manifest memo, as the CLI resolves it: the first CLI run is
    # then warm (a 10M-line manifest is parsed once, here).
    pool = resolve_pool(str(manifest), memo_dir=manifest_memo_dir(work / "cache"))
    timings["manifest_s"] = time.perf_counter() - started

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 1.0, (classes, dim)).astype(np.float32) * 3
    y = rng.integers(0, classes, n)
    fingerprint = model_fingerprint("resnet18", "none", None)
    keys = [item.key for item in pool.items]
    del pool
    chunk = segment_rows
    dtype = np.float16 if storage == "float16" else np.float32
    # Noise drawn once for 65,536 rows and reused shifted (drawing 5 G normals costs minutes
    # on a busy machine; the picks' timing does not depend on the noise being fresh).
    noise = rng.standard_normal((65_536, dim), dtype=np.float32)
    with EmbeddingCache(work / "cache", durable=False, storage_dtype=storage) as store:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            X = centers[y[start:stop]]
            X += noise[np.arange(start, stop) % len(noise)]
            store.store(fingerprint, keys[start:stop], X.astype(dtype, copy=False))
            del X
        if compact:
            store.compact(fingerprint)
    timings["fill_s"] = time.perf_counter() - started

    picked = np.sort(rng.choice(n, labeled, replace=False))
    with (work / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "label"])
        writer.writerows((f"s3://alcli-bench/pool/{i:07d}.jpg", f"class{y[i]}") for i in picked)
    return timings


def warm_select(
    work: Path,
    budget: int,
    strategy: str = "margin",
    memory: str | None = None,
) -> tuple[float, int, float, dict[str, object]]:
    """Wall seconds of the CLI as a user runs it, how many URIs it printed, its peak RSS in
    GiB (``/usr/bin/time``'s maximum resident set) and its --json summary (timings per
    phase, exact, method)."""
    env = {**os.environ, "ALCLI_CACHE_DIR": str(work / "cache")}
    cmd = [
        str(ROOT / ".venv" / "bin" / "alcli"),
        "select",
        str(work / "pool.csv"),
        *MODEL,
        "--strategy",
        strategy,
        "--budget",
        str(budget),
        "--labeled",
        str(work / "labels.csv"),
        "--json",
    ]
    if memory:
        cmd += ["--memory", memory]
    # Peak RSS from /usr/bin/time, a small process that forks the CLI: a child forked from
    # this one would report this process's RSS at fork time (Linux keeps the high-water mark
    # across exec), 8.3 GiB after building a 10M pool.
    cmd = ["/usr/bin/time", "-f", "alcli-maxrss-kib=%M", *cmd]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"alcli select failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout)
    summary.pop("picks", None)
    kib = [ln for ln in done.stderr.splitlines() if ln.startswith("alcli-maxrss-kib=")]
    peak = int(kib[-1].split("=")[1]) / 2**20 if kib else float("nan")
    return seconds, int(summary["picked"]), peak, summary


def strategy_rows(work: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    """One warm CLI run per strategy: seconds, peak RSS, exact or how it was approximated."""
    from alcli import strategies

    names = (
        [s.name for s in strategies.available()]
        if args.strategy_rows == "all"
        else args.strategy_rows.split(",")
    )
    rows: list[dict[str, object]] = []
    for name in names:
        seconds, picked, peak, summary = warm_select(
            work, args.strategy_budget, strategy=name, memory=args.memory
        )
        rows.append(
            {
                "strategy": name,
                "seconds": round(seconds, 2),
                "peak_rss_gib": round(peak, 2),
                "exact": summary.get("exact"),
                "method": summary.get("method"),
                "picked": picked,
                "phases_s": summary.get("seconds"),
                "load": round(os.getloadavg()[0], 1),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (the only output)")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2, help="warm runs; the best is kept")
    parser.add_argument("--skip-strategies", action="store_true")
    parser.add_argument("--work", default="", help="keep the pool here (reused if present)")
    parser.add_argument("--labeled", type=int, default=2000)
    parser.add_argument("--storage", default="auto", help="float32, float16, auto (16 from 5M)")
    parser.add_argument("--memory", default="", help="alcli select --memory (e.g. 4GiB)")
    parser.add_argument("--strategy-rows", default="", help="'all' or names: a row each")
    parser.add_argument("--strategy-budget", type=int, default=1000)
    parser.add_argument("--max-disk-gib", type=float, default=30.0)
    args = parser.parse_args()

    storage = args.storage
    if storage == "auto":
        storage = "float16" if args.n >= 5_000_000 else "float32"
    big = args.n > 2_000_000
    label = f"{args.n // 1_000_000}m" if args.n % 1_000_000 == 0 else str(args.n)
    result: dict[str, object] = {
        "n": args.n,
        "dim": args.dim,
        "budget": args.budget,
        "storage": storage,
        "labeled": args.labeled,
        "memory": args.memory or "default",
    }
    need_gib = args.n * args.dim * (2 if storage == "float16" else 4) / 2**30
    if need_gib > args.max_disk_gib:
        result["skipped"] = (
            f"{need_gib:.0f} GiB of {storage} rows is over --max-disk-gib {args.max_disk_gib:g} "
            "(the disk is shared with other work)"
        )
        print(json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="alcli-select-scale-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "labels.csv").exists():
            setup = build_pool(
                work,
                args.n,
                args.dim,
                10,
                args.labeled,
                storage=storage,
                segment_rows=1_000_000 if big else 65_536,
                compact=not big,
            )
            result["setup"] = {k: round(v, 2) for k, v in setup.items()}
        runs = [warm_select(work, args.budget, memory=args.memory) for _ in range(args.repeats)]
        best = min(range(len(runs)), key=lambda i: runs[i][0])
        result["warm_select_runs_s"] = [round(r[0], 2) for r in runs]
        result["peak_rss_runs_gib"] = [round(r[2], 2) for r in runs]
        key = "warm_select_1m_s" if label == "1m" else f"warm_select_{label}_margin_s"
        result[key] = round(runs[best][0], 2)
        result["peak_rss_gib"] = round(runs[best][2], 2)  # the best (warm) run's
        result["peak_rss_max_gib"] = round(max(r[2] for r in runs), 2)  # any run, cold too
        result["phases_s"] = runs[best][3].get("seconds")
        result["picked"] = runs[0][1]
        if args.strategy_rows:
            result["strategy_rows"] = strategy_rows(work, args)
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
