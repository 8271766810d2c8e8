"""What listing an S3 prefix costs, ours and the server's: s3fs's ``find`` vs obstore's ``list``.

One moto server process (tests/s3server.py, no added delay), N small objects under one
prefix. Per round, interleaved: ``resolve_pool`` of the prefix with the listing through s3fs
(as before session 9) and through obstore (``listing.list_s3_fast``), each after a warm-up
call (imports, clients, connections); CPU seconds of this process and of the server, and the
wall clock, per call. Both must give the same items (checked).

    flock /work/wt/bench.lock /work/wt/timed.sh .venv/bin/python benchmarks/s3_listing.py \\
        --n 3000 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcli.sources import listing, resolve_pool  # noqa: E402
from embed_throughput import (  # noqa: E402
    BUCKET,
    log,
    process_cpu_seconds,
    s3_environment,
    s3_server_process,
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import boto3

    s3_environment()
    fast_listing = listing.list_s3_fast

    def s3fs_listing(fast: Any, fs: Any, root: str) -> tuple[None, bool]:
        return None, False

    with s3_server_process(0.0) as (endpoint, pid):
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        keys = [f"listed/d{index % 10}/img{index:06d}.png" for index in range(args.n)]
        with ThreadPoolExecutor(8) as workers:
            list(
                workers.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=b"x"), keys)
            )
        storage = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        spec = f"s3://{BUCKET}/listed/"
        runs: dict[str, list[dict[str, float]]] = {"s3fs": [], "obstore": []}
        items: dict[str, Any] = {}
        for number in range(args.rounds + 1):  # round 0: warm-up, not kept
            log(f"round {number}/{args.rounds}")
            for name, chosen in (("s3fs", s3fs_listing), ("obstore", fast_listing)):
                listing.list_s3_fast = chosen  # type: ignore[assignment]
                try:
                    server_before = process_cpu_seconds(pid)
                    ours_before = time.process_time()
                    started = time.perf_counter()
                    pool = resolve_pool(spec, storage_options=storage)
                    wall = time.perf_counter() - started
                    ours = time.process_time() - ours_before
                    server = process_cpu_seconds(pid) - server_before
                finally:
                    listing.list_s3_fast = fast_listing
                items[name] = pool.items
                if number:
                    runs[name].append({"ours_s": ours, "server_s": server, "wall_s": wall})
        if items["s3fs"] != items["obstore"] or len(items["s3fs"]) != args.n:
            raise RuntimeError("the two listings differ")

    def median(name: str, key: str) -> float:
        return round(float(np.median([r[key] for r in runs[name]])), 4)

    report: dict[str, Any] = {
        f"{name}_{key}": median(name, key)
        for name in runs
        for key in ("ours_s", "server_s", "wall_s")
    }
    report["ours_ms_per_key_saved"] = round(
        1000 * (report["s3fs_ours_s"] - report["obstore_ours_s"]) / args.n, 4
    )
    report["rounds"] = {
        name: [{k: round(v, 4) for k, v in r.items()} for r in rs] for name, rs in runs.items()
    }
    report["settings"] = {"n": args.n, "rounds": args.rounds}
    report["machine"] = {
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
