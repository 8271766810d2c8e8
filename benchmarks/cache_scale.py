"""How fast the embedding cache fills and reads back a large warm pool.

Fills a temporary cache through the public API in pipeline-sized batches, then looks every
key up from a new ``EmbeddingCache`` object (as a new process would): in pool order
(``lookup_s``), in pool order again (``lookup_again_s``: the first lookup of a process also
pays the OS for first-touching a fresh result array, 2 GB here) and in a shuffled order.
The target: ``lookup_s`` <= 3 s for 1M x 512 float32.

    .venv/bin/python benchmarks/cache_scale.py --n 1000000 --dim 512 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from alcli.cache import EmbeddingCache

FINGERPRINT = "0123456789abcdef"


def make_keys(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct random 32-hex-char keys, like the item keys alcli.sources makes."""
    raw = rng.bytes(16 * n).hex()
    keys = [raw[i : i + 32] for i in range(0, 32 * n, 32)]
    if len(set(keys)) != n:
        raise SystemExit("random keys collided; use another --seed")
    return keys


def batch_rows(start: int, count: int, dim: int, base: np.ndarray) -> np.ndarray:
    """Rows whose first column is the row's pool index, so a lookup can be checked."""
    rows = base[:count].copy()
    rows[:, 0] = np.arange(start, start + count, dtype=np.float32)
    return rows


def run(n: int, dim: int, batch: int, durable: bool, directory: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    keys = make_keys(n, rng)
    base = rng.standard_normal((batch, dim), dtype=np.float32)

    fill_s = 0.0
    with EmbeddingCache(directory, durable=durable) as cache:
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            rows = batch_rows(start, stop - start, dim, base)
            t0 = time.perf_counter()
            cache.store(FINGERPRINT, keys[start:stop], rows)
            fill_s += time.perf_counter() - t0
        segments = cache.stats(FINGERPRINT)[FINGERPRINT]["segments"]

    with EmbeddingCache(directory) as cache:
        t0 = time.perf_counter()
        embeddings, found = cache.lookup(FINGERPRINT, keys)
        lookup_s = time.perf_counter() - t0
    expected_index = np.arange(n, dtype=np.float32)
    if not found.all() or not np.array_equal(embeddings[:, 0], expected_index):
        raise SystemExit("lookup returned wrong rows")
    del embeddings

    # the same again: the first lookup also paid for first-touching a fresh result array
    with EmbeddingCache(directory) as cache:
        t0 = time.perf_counter()
        embeddings, found = cache.lookup(FINGERPRINT, keys)
        again_s = time.perf_counter() - t0
    if not found.all():
        raise SystemExit("second lookup missed rows")
    del embeddings

    order = rng.permutation(n)
    shuffled = [keys[i] for i in order]
    with EmbeddingCache(directory) as cache:
        t0 = time.perf_counter()
        embeddings, found = cache.lookup(FINGERPRINT, shuffled)
        shuffled_s = time.perf_counter() - t0
    if not found.all() or not np.array_equal(embeddings[:, 0], expected_index[order]):
        raise SystemExit("shuffled lookup returned wrong rows")
    del embeddings

    return {
        "n": n,
        "dim": dim,
        "batch": batch,
        "durable": durable,
        "segments": segments,
        "fill_s": round(fill_s, 3),
        "lookup_s": round(lookup_s, 3),
        "lookup_rows_per_s": round(n / lookup_s),
        "lookup_again_s": round(again_s, 3),
        "lookup_shuffled_s": round(shuffled_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items in the pool")
    parser.add_argument("--dim", type=int, default=512, help="embedding width")
    parser.add_argument("--batch", type=int, default=1024, help="rows per store call")
    parser.add_argument("--no-fsync", action="store_true", help="store with durable=False")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="alcli-cache-bench-", dir=args.dir))
    try:
        result = run(args.n, args.dim, args.batch, not args.no_fsync, directory, args.seed)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
