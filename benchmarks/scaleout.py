"""What Ray costs and buys: the same pool through ``--engine threads`` and ``--engine ray``.

One run, N MNIST PNGs (benchmarks/.work/mnist/train, built by examples/mnist_pool.py), one
model (mobilenet_v2 IMAGENET1K_V1 at --image-size), one batch size:

- ``threads_ips``: ``alcli.embedding.embed`` with the threads engine, cold cache (the whole
  call timed: listing, model build, pipeline, cache writes).
- ``ray_local_ips``: the same call with ``engine="ray"`` on a local Ray of this machine's
  cores (started once before the rounds, ``ray_init_s``; the actors start inside each timed
  call, as they do for every ``alcli embed`` run).
- ``ray_two_node_ips``: the same on a two-node ``ray.cluster_utils.Cluster`` on this machine
  (half the cores each): actors on two raylets, blocks crossing object stores. It simulates
  a cluster's plumbing, not its hardware: both nodes share these cores.
- ``ray_vs_threads = ray_local_ips / threads_ips`` (target >= 0.8): the median over rounds of
  the ratio within each round (threads, then ray, side by side), since other processes
  share the cores and come and go. ``per_round`` also has each Ray call's start-up
  (``ray_first_batch_s``) and rate after it: round 0 starts on fresh worker processes; later
  rounds of a local pool reuse the workers Ray kept, with their backbones
  (``ray_vs_threads_cold`` is round 0's ratio alone).

    .venv/bin/python benchmarks/scaleout.py --n 2000 --json
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
MNIST = ROOT / "benchmarks" / ".work" / "mnist" / "train"

from alcli.embedding import EmbedOptions, embed  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(pool: Path, options: EmbedOptions, cache: Path) -> tuple[float, dict[str, Any]]:
    """Items per second of one cold ``embed`` call, and its stages."""
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    result = embed(str(pool), options=options, cache=cache)
    seconds = time.perf_counter() - start
    if result.failures or result.embedded != len(result.pool.items):
        raise RuntimeError(f"{len(result.failures)} failed, {result.embedded} embedded")
    return result.embedded / seconds, result.stages


def _start(stages: dict[str, Any]) -> dict[str, Any]:
    """A Ray call's start-up (seconds to its first batch) and rate after it: round 0 starts
    on fresh worker processes, later rounds on the ones Ray kept (``layout`` ``tasks``)."""
    ray = stages.get("ray") or {}
    keys = ("layout", "first_batch_s", "after_first_batch_ips")
    return {f"ray_{key}": ray.get(key) for key in keys}


def make_pool(n: int, folder: Path) -> Path:
    """The first ``n`` MNIST PNGs, linked into one folder (the same files every engine reads)."""
    names = sorted(os.listdir(MNIST))[:n]
    if len(names) < n:
        raise SystemExit(f"{MNIST} has {len(names)} PNGs; run examples/mnist_pool.py first")
    folder.mkdir(parents=True)
    for name in names:
        os.symlink(MNIST / name, folder / name)
    return folder


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="alcli-scaleout-"))
    try:
        pool = make_pool(args.n, work / "pool")
        base = {"model": "mobilenet_v2", "image_size": args.image_size, "batch_size": 64}
        threads = EmbedOptions(**base)
        on_ray = EmbedOptions(**base, engine="ray")
        cores = os.cpu_count() or 1
        log(f"warm-up: {args.warmup} items through the threads engine")
        timed(make_pool(args.warmup, work / "warm"), threads, work / "cache-warm")

        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - start
        rounds: list[dict[str, float]] = []
        for number in range(args.rounds):
            t_ips, _ = timed(pool, threads, work / "cache")
            r_ips, stages = timed(pool, on_ray, work / "cache")
            rounds.append({"threads_ips": t_ips, "ray_local_ips": r_ips, **_start(stages)})
            log(f"round {number}: threads {t_ips:.1f}/s, ray local {r_ips:.1f}/s")
        ray.shutdown()
        two_node: list[dict[str, float]] = []
        two_stages: dict[str, Any] = {}
        if args.skip_two_node:
            return _report(args, cores, ray_init_s, rounds, stages, two_node, two_stages)

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": max(1, cores // 2), "include_dashboard": False},
        )
        try:
            cluster.add_node(num_cpus=max(1, cores - cores // 2))
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            for number in range(args.rounds):
                t_ips, _ = timed(pool, threads, work / "cache")
                r_ips, two_stages = timed(pool, on_ray, work / "cache")
                two_node.append(
                    {"threads_ips": t_ips, "ray_two_node_ips": r_ips, **_start(two_stages)}
                )
                log(f"two-node round {number}: threads {t_ips:.1f}/s, ray {r_ips:.1f}/s")
        finally:
            ray.shutdown()
            cluster.shutdown()

        return _report(args, cores, ray_init_s, rounds, stages, two_node, two_stages)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(
    args: argparse.Namespace,
    cores: int,
    ray_init_s: float,
    rounds: list[dict[str, Any]],
    stages: dict[str, Any],
    two_node: list[dict[str, Any]],
    two_stages: dict[str, Any],
) -> dict[str, Any]:
    """The JSON: medians over rounds, round 0's (cold) ratios, every round's start-up."""

    def median(rows: list[dict[str, Any]], key: str) -> float | None:
        return round(statistics.median(row[key] for row in rows), 1) if rows else None

    def ratio(rows: list[dict[str, Any]], key: str) -> float | None:
        return (
            round(statistics.median(r[key] / r["threads_ips"] for r in rows), 3) if rows else None
        )

    return {
        "n": args.n,
        "model": "mobilenet_v2",
        "image_size": args.image_size,
        "cores": cores,
        "rounds": args.rounds,
        "threads_ips": median(rounds, "threads_ips"),
        "ray_local_ips": median(rounds, "ray_local_ips"),
        "ray_two_node_ips": median(two_node, "ray_two_node_ips"),
        "ray_vs_threads": ratio(rounds, "ray_local_ips"),
        "ray_vs_threads_cold": ratio(rounds[:1], "ray_local_ips"),
        "ray_two_node_vs_threads": ratio(two_node, "ray_two_node_ips"),
        "ray_two_node_vs_threads_cold": ratio(two_node[:1], "ray_two_node_ips"),
        "ray_init_s": round(ray_init_s, 2),
        "ray_local_stats": stages.get("ray"),
        "ray_two_node_stats": two_stages.get("ray"),
        "per_round": {"local": rounds, "two_node": two_node},
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="pool size (MNIST PNGs)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=128)
    parser.add_argument(
        "--skip-two-node", action="store_true", help="local Ray only (no simulated cluster)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            if not isinstance(value, dict):
                print(f"{key:>24}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
