"""What a user waits for: a whole ``alcli embed POOL --engine ray`` process against ``alcli embed
POOL`` (threads) on the same pool, each a fresh process with a cold cache.

``scaleout.py`` times ``embed()`` calls in one driver, with ``ray.init`` before and outside
them. A user's ``alcli embed --engine ray`` (no ``--ray-address``) pays all of it in one
process: Python and alcli's imports, listing, the fingerprint, starting a local Ray, Ray
Data's first use in the process, fresh worker processes (torch, the model), the run, and
Ray's shutdown at exit. So this times the two commands end to end, side by side in each
round (the order alternates between rounds), and reports
``ray_vs_threads_cli = threads_s / ray_s`` (the items/s ratio, as in ``scaleout.py``) per
round and its median, with Ray's own stats from ``--json`` (``stages.ray``).

    .venv/bin/python benchmarks/ray_cli.py --n 10000 --rounds 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scaleout import log, make_pool  # noqa: E402

ALCLI = [sys.executable, "-m", "alcli"]


def one(pool: Path, cache: Path, engine: str, image_size: int) -> dict[str, Any]:
    """One cold ``alcli embed`` process: its wall seconds and its ``--json`` summary."""
    shutil.rmtree(cache, ignore_errors=True)
    command = [*ALCLI, "embed", str(pool), "--image-size", str(image_size)]
    command += ["--cache-dir", str(cache), "--json", "-q", "--engine", engine]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    if summary["failed"] or summary["embedded"] != summary["items"]:
        raise SystemExit(f"{engine}: {summary['failed']} failed of {summary['items']}")
    return {"s": round(seconds, 2), "call_s": summary["seconds"], "stages": summary["stages"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="alcli-raycli-"))
    try:
        pool = make_pool(args.n, work / "pool")
        rounds = []
        for number in range(args.rounds):
            order = ("threads", "ray") if number % 2 == 0 else ("ray", "threads")
            got = {engine: one(pool, work / "cache", engine, args.image_size) for engine in order}
            ray = got["ray"]["stages"].get("ray") or {}
            row = {
                "order": list(order),
                "threads_s": got["threads"]["s"],
                "ray_s": got["ray"]["s"],
                "ray_vs_threads_cli": round(got["threads"]["s"] / got["ray"]["s"], 3),
                # inside the process: embed()'s own seconds (no imports, no Ray shutdown)
                "threads_call_s": got["threads"]["call_s"],
                "ray_call_s": got["ray"]["call_s"],
                "ray_run": {
                    k: ray.get(k) for k in ("wall_s", "first_batch_s", "after_first_batch_ips")
                },
            }
            rounds.append(row)
            log(f"round {number}: {json.dumps(row)}")
        ratios = [r["ray_vs_threads_cli"] for r in rounds]
        return {
            "n": args.n,
            "model": "mobilenet_v2",
            "image_size": args.image_size,
            "cores": os.cpu_count(),
            "rounds": args.rounds,
            "threads_ips_cli": round(args.n / statistics.median(r["threads_s"] for r in rounds), 1),
            "ray_ips_cli": round(args.n / statistics.median(r["ray_s"] for r in rounds), 1),
            "ray_vs_threads_cli": round(statistics.median(ratios), 3),
            "per_round": rounds,
            "load_average": os.getloadavg(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="pool size (MNIST PNGs)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            if not isinstance(value, list):
                print(f"{key:>20}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
