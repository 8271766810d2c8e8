"""Timestamps of two ``RayRun``s on one fresh local Ray: worker process births, read calls,
actor ``__init__`` (start, torch imported, end), task starts, first batches at the driver.

Each worker appends a JSON line to a trace file; the driver prints them against its clock
(session 8 used it to split the old layout's start-up, benchmarks/RESULTS.md). The layout is
forced onto the engine: ``split`` (reading tasks, then actors), ``actors`` or ``tasks``.

    .venv/bin/python benchmarks/ray_trace.py split 1024
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import alcli.pipeline.ray_workers as rw

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "benchmarks" / ".work" / "mnist" / "train"
TRACE = os.path.join(tempfile.gettempdir(), f"alcli-ray-trace-{os.getpid()}.log")
QUIET = ("read_start", "read_end", "task_start", "task_end")  # printed once per process


def _born() -> float:
    """This process's start (epoch seconds), from /proc."""
    with open("/proc/stat") as stat:
        btime = next(int(line.split()[1]) for line in stat if line.startswith("btime"))
    with open("/proc/self/stat") as own:
        ticks = int(own.read().rsplit(")", 1)[1].split()[19])
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def ev(name: str, **extra: Any) -> None:
    record = {"t": time.time(), "ev": name, "pid": os.getpid(), "born": _born(), **extra}
    with open(TRACE, "a") as out:
        out.write(json.dumps(record) + "\n")


_read = rw.read_block
_task = rw.read_and_embed


def traced_read(batch: Any, **kw: Any) -> Any:
    ev("read_start", n=len(batch["uri"]))
    out = _read(batch, **kw)
    ev("read_end")
    return out


def traced_task(batch: Any, **kw: Any) -> Any:
    cached = bool(rw._BACKBONE)
    ev("task_start", cached=cached)
    if not cached:
        import torch  # noqa: F401
        import torchvision  # noqa: F401

        ev("task_torch_imported")
    out = _task(batch, **kw)
    ev("task_end", cached=cached)
    return out


class TracedActor(rw.EmbedActor):
    def __init__(self, **kw: Any) -> None:
        ev("actor_init_start")
        import torch  # noqa: F401
        import torchvision  # noqa: F401

        ev("actor_torch_imported")
        super().__init__(**kw)
        ev("actor_init_end")
        self.calls = 0

    def __call__(self, batch: Any) -> Any:
        self.calls += 1
        if self.calls <= 2:
            ev("actor_call_start", k=self.calls)
        out = super().__call__(batch)
        if self.calls <= 2:
            ev("actor_call_end", k=self.calls)
        return out


def main() -> None:
    import ray

    from alcli.models import load_backbone
    from alcli.pipeline import ray_engine

    mode = sys.argv[1] if len(sys.argv) > 1 else "tasks"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    backbone = load_backbone("mobilenet_v2", None, 112, device="cpu")
    t0 = time.time()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ev("driver_ray_init_done")
    rw.read_block = traced_read  # type: ignore[assignment]
    rw.read_and_embed = traced_task  # type: ignore[assignment]
    rw.EmbedActor = TracedActor  # type: ignore[misc]
    ray_engine.layout_for = lambda local, gpus: mode  # type: ignore[assignment]
    uris = [str(MNIST / name) for name in sorted(os.listdir(MNIST))[:n]]
    for rnd in range(2):
        ev("driver_run_start", rnd=rnd)
        run = ray_engine.RayRun(
            uris,
            model="mobilenet_v2",
            weights=None,
            image_size=112,
            device="cpu",
            fingerprint=backbone.fingerprint,
            storage_options={},
            batch_size=64,
        )
        for k, _ in enumerate(run, 1):
            if k <= 2:
                ev("driver_batch", k=k, rnd=rnd)
        ev("driver_run_end", rnd=rnd, stats=run.stats)
    ray.shutdown()
    with open(TRACE) as trace:
        records = [json.loads(line) for line in trace]
    os.remove(TRACE)
    seen: set[tuple[int, str]] = set()
    for r in records:
        if r["ev"] in QUIET:
            if (r["pid"], r["ev"]) in seen:
                continue
            seen.add((r["pid"], r["ev"]))
        extra = {k: v for k, v in r.items() if k not in ("t", "ev", "pid", "born", "stats")}
        at, born = r["t"] - t0, r["born"] - t0
        print(f"{at:8.2f}  {r['ev']:24s} pid={r['pid']} born={born:7.2f} {extra}")
    print(json.dumps([r.get("stats") for r in records if r["ev"] == "driver_run_end"]))
    print("load", os.getloadavg())


if __name__ == "__main__":
    main()
