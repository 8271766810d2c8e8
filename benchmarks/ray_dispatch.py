"""Where a warm ``--engine ray`` call loses time against threads: layout knobs side by side.

One local Ray (this machine's cores), its workers warmed by two runs first (torch imported,
backbone built), then rounds of: the threads engine, and each variant of the ``tasks``
layout, every call a cold cache on the same N MNIST PNGs (mobilenet_v2 at 112 px, batch 64).
A variant sets ``ray_engine``'s module knobs for its call:

- ``BATCHES_PER_TASK``: batches one ``read_and_embed`` task takes (Ray Data leaves a worker
  idle between two tasks, so fewer, larger tasks mean fewer gaps);
- ``PREFETCH_BLOCKS``: ``iter_batches``' prefetch (its first window waits for that many
  blocks before the driver sees the first one);
- ``TASKS_PER_WORKER``: tasks kept in flight per worker (the next one queued at the raylet);
- ``FROM_BLOCKS``: the input built with ``from_blocks`` (no remote metadata tasks).

Reports each variant's median ratio to threads within a round, and its start-up.

    .venv/bin/python benchmarks/ray_dispatch.py --n 4096 --rounds 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcli.embedding import EmbedOptions  # noqa: E402
from alcli.pipeline import ray_engine  # noqa: E402
from scaleout import make_pool, timed  # noqa: E402

VARIANTS: dict[str, dict[str, int]] = {
    "shipped": {},
    "prefetch1": {"PREFETCH_BLOCKS": 1},
    "batches8": {"BATCHES_PER_TASK": 8},
    "batches8_prefetch1": {"BATCHES_PER_TASK": 8, "PREFETCH_BLOCKS": 1},
    "inflight2": {"TASKS_PER_WORKER": 2},
    "from_blocks": {"FROM_BLOCKS": 1},
    "from_blocks_prefetch1": {"FROM_BLOCKS": 1, "PREFETCH_BLOCKS": 1},
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    names = args.variants.split(",") if args.variants else list(VARIANTS)
    shipped = {key: getattr(ray_engine, key) for v in VARIANTS.values() for key in v}
    work = Path(tempfile.mkdtemp(prefix="alcli-dispatch-"))
    try:
        pool = make_pool(args.n, work / "pool")
        base = {"model": "mobilenet_v2", "image_size": 112, "batch_size": 64}
        threads, on_ray = EmbedOptions(**base), EmbedOptions(**base, engine="ray")
        timed(make_pool(128, work / "warm"), threads, work / "cache")
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        for _ in range(2):  # the workers: torch imported, backbone built
            timed(make_pool(512, work / f"warm{_}"), on_ray, work / "cache")
        rows: list[dict[str, Any]] = []
        for number in range(args.rounds):
            t_ips, _ = timed(pool, threads, work / "cache")
            row: dict[str, Any] = {"round": number, "threads_ips": round(t_ips, 1)}
            for name in names:
                for key, value in {**shipped, **VARIANTS[name]}.items():
                    setattr(ray_engine, key, value)
                r_ips, stages = timed(pool, on_ray, work / "cache")
                stats = stages.get("ray") or {}
                row[name] = {
                    "ips": round(r_ips, 1),
                    "vs_threads": round(r_ips / t_ips, 3),
                    "first_batch_s": stats.get("first_batch_s"),
                }
                print(
                    f"round {number} {name}: {r_ips:.1f}/s vs threads {t_ips:.1f}/s",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append(row)
        ray.shutdown()
        summary = {
            name: round(statistics.median(r[name]["vs_threads"] for r in rows), 3) for name in names
        }
        return {
            "n": args.n,
            "rounds": rows,
            "vs_threads_median": summary,
            "load_average": os.getloadavg(),
        }
    finally:
        for key, value in shipped.items():
            setattr(ray_engine, key, value)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(args)
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
