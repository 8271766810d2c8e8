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


def argpartition_top_k(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row as ``exact_knn`` took them before session 12: an argpartition of
    every entry, then the order by similarity and row."""
    top = np.argpartition(-S, k - 1, axis=1)[:, :k]
    top_s = np.take_along_axis(S, top, axis=1)
    order = np.lexsort((top, -top_s), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_s, order, axis=1)


def argpartition_knn(
    queries: np.ndarray, points: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``exact_knn`` with its top-k step as it was (the library's search, the old selection)."""
    shipped = knn.top_k
    knn.top_k = argpartition_top_k
    try:
        return knn.exact_knn(queries, points, k, exclude_self=exclude_self)
    finally:
        knn.top_k = shipped


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
