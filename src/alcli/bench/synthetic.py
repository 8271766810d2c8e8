"""Synthetic strategy inputs: seeded float32 arrays shaped like what ``select`` passes.

What a strategy costs depends on the pool's size and the embeddings' width, not on the
images, so the bench times the strategies on stand-ins of the pool's size and the model's
width instead of the user's data.
"""

from __future__ import annotations

import numpy as np

#: Blobs in the synthetic embeddings, and classes in the synthetic probabilities.
STRATEGY_CLASSES = 10


def input_bytes_per_row(dim: int, committee: int = 0) -> int:
    """Bytes one pool row takes in the synthetic inputs: embedding, probabilities, mask."""
    return 4 * dim + 4 * STRATEGY_CLASSES * (1 + committee) + 1


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Row softmax in place (float32 in, float32 out): no second n x C array."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def synthetic_inputs(
    rows: int, dim: int, *, committee: int = 0, seed: int = 0
) -> dict[str, np.ndarray | None]:
    """Seeded float32 stand-ins for a pool's arrays, shaped like what ``select`` passes.

    Embeddings: ``STRATEGY_CLASSES`` Gaussian blobs (centres uniform in [-10, 10]^dim, unit
    spread, like sklearn's make_blobs), so the diversity strategies see clusters. Probs: a
    softmax of noisy scores favouring each row's blob, so some rows are uncertain; the
    committee is ``committee`` more such draws. 1 % of the rows (at least one) labeled.
    Built in place and in row chunks, so the peak is the arrays themselves.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(STRATEGY_CLASSES, dim)).astype(np.float32)
    blob = rng.integers(0, STRATEGY_CLASSES, size=rows)
    embeddings = rng.standard_normal((rows, dim), dtype=np.float32)
    chunk = max(1, (64 << 20) // max(1, 4 * dim))
    for start in range(0, rows, chunk):
        embeddings[start : start + chunk] += centres[blob[start : start + chunk]]

    def probabilities() -> np.ndarray:
        scores = rng.standard_normal((rows, STRATEGY_CLASSES), dtype=np.float32)
        scores[np.arange(rows), blob] += 2.0
        return _softmax(scores)

    probs = probabilities()
    members = np.stack([probabilities() for _ in range(committee)]) if committee else None
    labeled = np.zeros(rows, dtype=bool)
    labeled[rng.choice(rows, size=max(1, rows // 100), replace=False)] = True
    return {"embeddings": embeddings, "probs": probs, "committee": members, "labeled": labeled}
