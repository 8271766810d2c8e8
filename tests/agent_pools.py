"""A small labeled pool for ``alcli auto`` tests: overlapping Gaussian blobs, so the heads
keep improving round after round and every round trains real heads.

Plain functions (no pytest), importable as ``from agent_pools import blobs`` (pytest puts
``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import numpy as np

from alcli.agent import EvalSet


def blobs(n: int = 500, seed: int = 0) -> tuple[list[str], np.ndarray, dict[str, str], EvalSet]:
    """(pool uris, pool rows, the true label of each uri, a 200-item eval set), from ``seed``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)) * 3

    def draw(count: int) -> tuple[np.ndarray, list[str]]:
        y = rng.integers(0, 4, size=count)
        X = (centers[y] + rng.normal(size=(count, 8)) * 2.2).astype(np.float32)
        return X, [f"c{v}" for v in y]

    X, y = draw(n)
    eval_X, eval_y = draw(200)
    uris = [f"s3://pool/{i:04d}.png" for i in range(n)]
    eval_set = EvalSet([f"s3://eval/{i}.png" for i in range(200)], eval_X, eval_y)
    return uris, X, dict(zip(uris, y, strict=True)), eval_set
