"""One 65,536 x 512 float16 block to a head's logits [65,536, 10]: the cast to float32 and the
matmul, whole or in pieces of R rows, with OpenBLAS's threads or one (``_blas1``), on one
thread or two (``two_threads``). Milliseconds, best of 5; prints JSON. What
``CachedRows.project``'s piece size and BLAS setting were chosen from (benchmarks/RESULTS.md,
issue 16, session 7; the JSON is ``cast_matmul_micro_s7.json``).

    python benchmarks/cast_matmul.py
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from alcli._threads import single_threaded_blas

ROWS, DIM = 65_536, 512
rng = np.random.default_rng(0)
block = rng.standard_normal((ROWS, DIM)).astype(np.float16)
weights = rng.standard_normal((DIM, 10)).astype(np.float32)
logits = np.empty((ROWS, 10), np.float32)
whole = np.empty((ROWS, DIM), np.float32)
local = threading.local()
pool = ThreadPoolExecutor(2)


def pieces(start: int, stop: int, rows: int) -> None:
    """Cast and multiply ``rows`` rows at a time through this thread's small buffer."""
    buffer = getattr(local, "buffer", None)
    if buffer is None or len(buffer) != rows:
        buffer = local.buffer = np.empty((rows, DIM), np.float32)
    for at in range(start, stop, rows):
        piece = buffer[: min(rows, stop - at)]
        np.copyto(piece, block[at : at + len(piece)])
        np.matmul(piece, weights, out=logits[at : at + len(piece)])


def whole_block() -> None:
    np.copyto(whole, block)
    np.matmul(whole, weights, out=logits)


def one_thread(rows: int) -> Callable[[], None]:
    return lambda: pieces(0, ROWS, rows)


def two_threads(rows: int) -> Callable[[], None]:
    parts = [(s, min(ROWS, s + 8192)) for s in range(0, ROWS, 8192)]
    return lambda: list(pool.map(lambda p: pieces(p[0], p[1], rows), parts))


def best(step: Callable[[], object], repeats: int = 5) -> float:
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return round(min(times) * 1e3, 1)


def main() -> None:
    result: dict[str, object] = {"whole_block": best(whole_block)}
    for rows in (256, 512, 2048, 8192):
        result[f"pieces_{rows}"] = best(one_thread(rows))
    with single_threaded_blas():
        result["whole_block_blas1"] = best(whole_block)
        for rows in (512, 2048):
            result[f"pieces_{rows}_blas1"] = best(one_thread(rows))
            result[f"pieces_{rows}_two_threads_blas1"] = best(two_threads(rows))
    for rows in (512, 2048):
        result[f"pieces_{rows}_two_threads"] = best(two_threads(rows))
    result["cast_whole_block"] = best(lambda: np.copyto(whole, block))
    result["matmul_whole_block"] = best(lambda: np.matmul(whole, weights, out=logits))
    result["load"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
