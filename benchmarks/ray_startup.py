"""Where a cold ``--engine ray`` run's start-up goes, step by step, on this machine.

Each step timed from the driver on a fresh local Ray (``num_cpus`` = cores):

- ``ray_init_s``: ``ray.init`` (GCS, raylet, object store, prestarted workers).
- ``first_task_s``: a no-op task's round trip (a worker process ready).
- ``actor_*``: ``ACTORS`` actors started at once, each timing inside itself its process start
  (``ready``), ``import torch, torchvision``, ``load_backbone`` (the model build).
- ``data_noop_first_batch_s``: Ray Data planning + a no-op ``map_batches`` read stage's first
  block (no torch anywhere): the pipeline's fixed cost without the model.
- ``embed_stats``: a real ``RayRun`` (the engine's code path): ``first_batch_s`` and the rate
  after it; ``embed_again_stats`` a second run on the same Ray (new actors, warm driver).
- ``data_noop_again_first_batch_s``: the no-op pipeline again (the driver's imports warm).

    .venv/bin/python benchmarks/ray_startup.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "benchmarks" / ".work" / "mnist" / "train"
MODEL, IMAGE_SIZE = "mobilenet_v2", 112


class Probe:
    """An actor that times its own imports and model build."""

    def __init__(self, created: float) -> None:
        self.times = {"process_start_s": time.time() - created}
        t = time.time()
        import torch  # noqa: F401
        import torchvision  # noqa: F401

        self.times["import_torch_s"] = time.time() - t
        t = time.time()
        from alcli.models import load_backbone

        self.times["import_alcli_models_s"] = time.time() - t
        t = time.time()
        load_backbone(MODEL, None, IMAGE_SIZE, device="cpu")
        self.times["model_build_s"] = time.time() - t

    def report(self) -> dict[str, float]:
        return self.times


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from alcli.models import load_backbone
    from alcli.pipeline.ray_engine import RayRun

    out: dict[str, Any] = {"actors": args.actors}
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out["ray_init_s"] = round(time.perf_counter() - start, 2)

    @ray.remote(num_cpus=0)
    def noop() -> int:
        return os.getpid()

    start = time.perf_counter()
    ray.get(noop.remote())
    out["first_task_s"] = round(time.perf_counter() - start, 2)

    probe = ray.remote(num_cpus=1)(Probe)
    start = time.perf_counter()
    actors = [probe.remote(time.time()) for _ in range(args.actors)]
    reports = ray.get([a.report.remote() for a in actors])
    out["actors_ready_s"] = round(time.perf_counter() - start, 2)
    for key in reports[0]:
        out[f"actor_{key}"] = [round(r[key], 2) for r in reports]
    for a in actors:
        ray.kill(a)

    # Ray Data's own fixed cost: planning, a read stage, the first block back.
    names = sorted(os.listdir(MNIST))[: args.n]

    def noop_pipeline_s() -> float:
        start = time.perf_counter()
        ds = ray.data.from_items([{"i": i} for i in range(args.n)]).map_batches(
            lambda b: b, batch_size=64, num_cpus=0
        )
        next(iter(ds.iter_batches(batch_size=None)))
        return round(time.perf_counter() - start, 2)

    out["data_noop_first_batch_s"] = noop_pipeline_s()
    # again: the per-run part, the driver's imports now warm
    out["data_noop_again_first_batch_s"] = noop_pipeline_s()

    backbone = load_backbone(MODEL, None, IMAGE_SIZE, device="cpu")
    uris = [str(MNIST / n) for n in names]

    def embed_run() -> tuple[float, int, Any]:
        start = time.perf_counter()
        run = RayRun(
            uris,
            model=MODEL,
            weights=None,
            image_size=IMAGE_SIZE,
            device="cpu",
            fingerprint=backbone.fingerprint,
            storage_options={},
            batch_size=64,
        )
        count = sum(len(r.indices) for r in run)
        return round(time.perf_counter() - start, 2), count, run.stats

    out["embed_total_s"], out["embed_items"], out["embed_stats"] = embed_run()
    # a second run on the same Ray: new actors, warm driver
    out["embed_again_total_s"], _, out["embed_again_stats"] = embed_run()
    ray.shutdown()
    out["load_average"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--actors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=1) if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
