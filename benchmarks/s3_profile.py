"""Where the cores go when ``embed`` reads an S3 pool at full speed: CPU per thread, both sides.

One moto server process (tests/s3server.py, keep-alive, --delay-ms per request), N MNIST PNGs.
Per round: the model-only bound, ``embed`` on the local folder, ``embed`` on the S3 pool (cold
caches). Around each call, every thread's CPU time is read from ``/proc/<pid>/task/*/stat``
for this process and the server; this process's Python threads are named by a sampler (the
pipeline names its threads), the rest by their kernel name (obstore's tokio workers, torch's
OpenMP pool). Prints where each run's CPU seconds went, by thread group, per image, and the
pipeline's own stage stats.

    .venv/bin/python benchmarks/s3_profile.py --n 1000 --rounds 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mnist_pool import make_pools  # noqa: E402

from alcli.bench import ModelOnly, timed_embed  # noqa: E402
from alcli.embedding import EmbedOptions  # noqa: E402
from alcli.pipeline.threads import machine_idle_seconds  # noqa: E402
from embed_throughput import BUCKET, log, s3_environment, s3_server_process, upload  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (kernel name, CPU seconds) for every live thread of ``pid``."""
    out: dict[int, tuple[str, float]] = {}
    base = Path(f"/proc/{pid}/task")
    for task in base.iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


class Sampler:
    """Polls this process's and the server's threads; remembers each thread's last CPU time
    and, for this process, its Python thread name (tids are not reused within a run)."""

    def __init__(self, server_pid: int, every_s: float = 0.2) -> None:
        self.server_pid = server_pid
        self.every_s = every_s
        self.names: dict[int, str] = {}
        self.ours: dict[int, tuple[str, float]] = {}
        self.server: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _poll(self) -> None:
        for thread in threading.enumerate():
            if thread.native_id is not None:
                self.names[thread.native_id] = thread.name
        self.ours.update(thread_cpu(os.getpid()))
        self.server.update(thread_cpu(self.server_pid))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._poll()

    def __enter__(self) -> Sampler:
        self._poll()
        self.before_ours = dict(self.ours)
        self.before_server = dict(self.server)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def groups(self) -> dict[str, dict[str, float]]:
        """CPU seconds in the run by thread group, ours and the server's."""

        def group(tid: int, kernel: str) -> str:
            name = self.names.get(tid, "")
            if name:
                name = re.sub(r"-r?\d+$", "", name.replace("alcli-pipeline-", ""))
                name = re.sub(r"^Thread-\d+.*", "python-other", name)
                return "sampler" if name == "sampler" else name
            return re.sub(r"[-_]?\d+$", "", kernel) or kernel

        def spent(now: dict[int, tuple[str, float]], before: dict[int, tuple[str, float]]):
            totals: dict[str, float] = defaultdict(float)
            for tid, (kernel, cpu) in now.items():
                totals[group(tid, kernel)] += cpu - before.get(tid, (kernel, 0.0))[1]
            return {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}

        return {
            "ours": spent(self.ours, self.before_ours),
            "server": {"all": round(sum(spent(self.server, self.before_server).values()), 3)},
        }


def profiled(spec: str, options: EmbedOptions, cache: Path, storage: Any, pid: int) -> dict:
    with Sampler(pid) as sampler:
        cpu0 = time.process_time()
        idle0 = machine_idle_seconds() or 0.0
        result, seconds = timed_embed(spec, options, cache, storage)
        idle = (machine_idle_seconds() or 0.0) - idle0
        cpu = time.process_time() - cpu0
    items = len(result.items)
    groups = sampler.groups()
    return {
        "ips": round(items / seconds, 2),
        "wall_s": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_image": round(1000 * cpu / items, 3),
        "machine_idle_share": round(idle / (seconds * (os.cpu_count() or 1)), 3),
        "server_cpu_ms_per_image": round(1000 * groups["server"]["all"] / items, 3),
        "threads_cpu_s": groups,
        "stages": result.stages,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".work"))
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    pool = make_pools(workdir / f"mnist-{args.n}", train=args.n)["train"]
    paths = sorted(pool.directory.glob("*.png"))
    options = EmbedOptions(image_size=112, batch_size=64)
    caches = Path(tempfile.mkdtemp(prefix="caches-", dir=workdir))
    s3_environment()
    report: dict[str, Any] = {"rounds": []}
    try:
        bound = ModelOnly((path.read_bytes() for path in paths), options)
        with s3_server_process(args.delay_ms) as (endpoint, pid):
            upload(paths, endpoint, "mnist")
            storage = {
                "key": "testing",
                "secret": "testing",
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
            log("warm-up: imports, s3fs session, obstore store")
            profiled(f"s3://{BUCKET}/mnist/", options, caches / "warm", storage, pid)
            for number in range(args.rounds):
                log(f"round {number + 1}")
                one: dict[str, Any] = {"bound": bound.measure()}
                if not args.skip_local:
                    one["local"] = profiled(
                        str(pool.directory), options, caches / f"l{number}", None, pid
                    )
                one["s3"] = profiled(
                    f"s3://{BUCKET}/mnist/", options, caches / f"s{number}", storage, pid
                )
                report["rounds"].append(one)
                log(json.dumps({k: v.get("ips", v) for k, v in one.items()}))
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
