"""The exact search's top-k, old and new, on MNIST: the same neighbours, and the time of each.

``graph.exact_knn`` used to take each query block's k best with an ``argpartition`` of every
similarity; since session 12 it goes through ``graph.top_k`` (the k chunks of 64 columns with
the largest maxima, then a sort of those alone). Two searches, each both ways in one run: the
10,000 MNIST eval rows against the 50k pool (what ``HeadSpace.rows_for`` does for an eval
set; the faiss graph ``label_efficiency.py`` keeps gives the search space) and the first
20,000 pool rows against themselves (the exact backend's graph build). Prints JSON.

    .venv/bin/python benchmarks/exact_knn_topk.py --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from alcli.learner import graph as knn
from label_efficiency import cached_graph
from mnist_features import mnist_features


def argpartition_knn(
    queries: np.ndarray, points: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``exact_knn`` as it was before session 12 (argpartition, then the order by row)."""
    n, m = queries.shape[0], points.shape[0]
    k = min(k, m - 1 if exclude_self else m)
    block = max(1, min(n, knn.QUERY_BLOCK_BYTES // (4 * max(m, 1))))
    neighbors = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        S = queries[start : start + block] @ points.T
        rows = np.arange(S.shape[0])
        if exclude_self:
            S[rows, start + rows] = -np.inf
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(S, top, axis=1)
        order = np.lexsort((top, -top_s), axis=1)
        neighbors[start : start + block] = np.take_along_axis(top, order, axis=1)
        sims[start : start + block] = np.take_along_axis(top_s, order, axis=1)
    return neighbors, sims


def both(name: str, queries: np.ndarray, points: np.ndarray, k: int, **kw: Any) -> dict[str, Any]:
    started = time.perf_counter()
    old = argpartition_knn(queries, points, k, **kw)
    old_s = time.perf_counter() - started
    started = time.perf_counter()
    new = knn.exact_knn(queries, points, k, **kw)
    new_s = time.perf_counter() - started
    return {
        "search": name,
        "argpartition_s": round(old_s, 2),
        "top_k_s": round(new_s, 2),
        "same_neighbours": bool(np.array_equal(old[0], new[0])),
        "same_similarities": bool(np.array_equal(old[1], new[1])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (always)")
    parser.parse_args()
    pool, test = mnist_features()
    X = np.asarray(pool.X)
    graph = cached_graph(X, "faiss")
    queries = graph.project(np.asarray(test.X))
    own = graph.points[:20_000]
    result = [
        both("10k eval rows x 50k pool", queries, graph.points, graph.k),
        both("20k pool rows x themselves", own, own, graph.k, exclude_self=True),
    ]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
