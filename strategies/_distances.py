"""Chunked Euclidean distance kernels shared by the geometric strategies.

Everything goes through ``||a||² + ||b||² - 2 a·b`` so the heavy part is one BLAS matrix
product per block, and blocks are sized so no n x n (or n x k) matrix is ever materialised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

#: Elements in one distance block (32 MiB of float64): large enough for BLAS to run at full
#: speed, small enough to stay far from the memory limit whatever n is.
BLOCK_ELEMENTS = 1 << 22


def row_chunks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Row slices whose n_rows x n_cols blocks hold about BLOCK_ELEMENTS values."""
    step = max(1, BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def squared_norms(x: FloatArray) -> FloatArray:
    """Row-wise squared Euclidean norms, in x's dtype."""
    return np.einsum("ij,ij->i", x, x)


def squared_distances(
    a: FloatArray,
    b: FloatArray,
    a_sq: FloatArray | None = None,
    b_sq: FloatArray | None = None,
) -> FloatArray:
    """The |a| x |b| block of squared distances (clipped at 0); the caller keeps it small."""
    a_sq = squared_norms(a) if a_sq is None else a_sq
    b_sq = squared_norms(b) if b_sq is None else b_sq
    block = a @ b.T
    block *= -2.0
    block += a_sq[:, None]
    block += b_sq[None, :]
    np.maximum(block, 0.0, out=block)
    return block


def nearest(
    x: FloatArray,
    centres: FloatArray,
    x_sq: FloatArray | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each row's nearest centre (ties to the lower centre index) and squared distance."""
    x_sq = squared_norms(x) if x_sq is None else x_sq
    c = centres.astype(x.dtype, copy=False)
    c_sq = squared_norms(c)
    labels = np.empty(x.shape[0], dtype=np.int64)
    best = np.empty(x.shape[0], dtype=np.float64)
    for rows in row_chunks(x.shape[0], c.shape[0]):
        block = squared_distances(x[rows], c, x_sq[rows], c_sq)
        idx = np.argmin(block, axis=1)
        labels[rows] = idx
        best[rows] = np.take_along_axis(block, idx[:, None], axis=1)[:, 0]
    return labels, best


def mean_knn_distance(
    queries: FloatArray,
    reference: FloatArray,
    k: int,
    self_positions: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.float64]:
    """Mean distance from each query to its ``k`` nearest reference rows.

    ``self_positions[i]`` is query i's own row in ``reference`` (or -1), excluded so a point
    is not its own neighbour. ``k`` is clipped to the neighbours available.
    """
    n_ref = reference.shape[0]
    out = np.empty(queries.shape[0], dtype=np.float64)
    ref_sq = squared_norms(reference)
    q_sq = squared_norms(queries)
    for rows in row_chunks(queries.shape[0], n_ref):
        block = squared_distances(queries[rows], reference, q_sq[rows], ref_sq)
        if self_positions is not None:
            own = self_positions[rows]
            hit = np.flatnonzero(own >= 0)
            block[hit, own[hit]] = np.inf
        available = n_ref - (1 if self_positions is not None else 0)
        kk = max(1, min(k, available))
        if kk < n_ref:
            block = np.partition(block, kk - 1, axis=1)[:, :kk]
        finite = np.where(np.isfinite(block), block, 0.0)
        out[rows] = np.sqrt(finite).sum(axis=1) / kk
    return out


def kth_neighbour_distance(
    queries: FloatArray,
    reference: FloatArray,
    k: int,
    self_positions: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Distance from each query to its k-th nearest reference row (itself excluded)."""
    n_ref = reference.shape[0]
    kk = max(1, min(k, n_ref - 1))
    out = np.empty(queries.shape[0], dtype=np.float64)
    ref_sq = squared_norms(reference)
    q_sq = squared_norms(queries)
    for rows in row_chunks(queries.shape[0], n_ref):
        block = squared_distances(queries[rows], reference, q_sq[rows], ref_sq)
        own = self_positions[rows]
        hit = np.flatnonzero(own >= 0)
        block[hit, own[hit]] = np.inf
        out[rows] = np.sqrt(np.partition(block, kk - 1, axis=1)[:, kk - 1])
    return out
