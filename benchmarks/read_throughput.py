"""How fast one pass over a cache's segments can go here: the disk, the page cache, the cast.

Reads every embedding segment of a cache folder (``--cache``) sequentially in 64 MiB
``readinto`` calls, twice: cold (each file's pages first dropped from the page cache with
``POSIX_FADV_DONTNEED``, for these files only) and warm (right after, from the page cache
when it held them). Then, on one 64 MiB block of the first segment, the float16 -> float32
cast and a 512 x 10 head's matmul, on one thread and split over two. Prints JSON.

    python benchmarks/read_throughput.py --cache /tmp/s716/scale10m/cache --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CHUNK = 64 << 20


def segment_files(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "embeddings" / "segments").rglob("*") if p.is_file())


def read_all(files: list[Path]) -> tuple[float, int]:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total, started = 0, time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while got := handle.readinto(view):
                total += got
    return time.perf_counter() - started, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = segment_files(Path(args.cache))
    for path in files:  # drop first, so the cold pass times reading only
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    cold_s, nbytes = read_all(files)
    warm_s, _ = read_all(files)
    rows = CHUNK // (2 * args.dim)
    block = np.fromfile(files[0], dtype=np.float16, count=rows * args.dim, offset=32 << 20)
    block = block.reshape(rows, args.dim)
    out = np.empty(block.shape, np.float32)
    weights = np.random.default_rng(0).standard_normal((args.dim, 10)).astype(np.float32)
    logits = np.empty((rows, 10), np.float32)

    def best(step, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return min(times)

    def cast(a: int = 0, b: int = rows) -> None:
        np.copyto(out[a:b], block[a:b])

    def head(a: int = 0, b: int = rows) -> None:
        np.matmul(out[a:b], weights, out=logits[a:b])

    pool = ThreadPoolExecutor(2)
    halves = [(0, rows // 2), (rows // 2, rows)]
    cast1, head1 = best(cast), best(head)
    cast2 = best(lambda: list(pool.map(lambda ab: cast(*ab), halves)))
    head2 = best(lambda: list(pool.map(lambda ab: head(*ab), halves)))
    gb = nbytes / 1e9
    result = {
        "bytes": nbytes,
        "segments": len(files),
        "cold_read_s": round(cold_s, 2),
        "cold_read_gb_s": round(gb / cold_s, 3),
        "warm_read_s": round(warm_s, 2),
        "warm_read_gb_s": round(gb / warm_s, 3),
        "cast_f16_gb_s": {
            "1": round(block.nbytes / cast1 / 1e9, 3),
            "2": round(block.nbytes / cast2 / 1e9, 3),
        },
        "head_matmul_gb_s_f32": {
            "1": round(out.nbytes / head1 / 1e9, 3),
            "2": round(out.nbytes / head2 / 1e9, 3),
        },
        "pass_estimate_s": {
            "cast_and_head_1_thread": round(
                gb / (block.nbytes / cast1 / 1e9) + 2 * gb / (out.nbytes / head1 / 1e9), 1
            ),
            "cast_and_head_2_threads": round(
                gb / (block.nbytes / cast2 / 1e9) + 2 * gb / (out.nbytes / head2 / 1e9), 1
            ),
        },
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
