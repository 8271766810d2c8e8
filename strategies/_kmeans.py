"""Seeded k-means (k-means++ then Lloyd) in numpy, shared by the clustering strategies.

Our own implementation, not scikit-learn's, so the zoo has no heavy dependency and the only
randomness is the Generator passed in. Three things keep it fast at 100k x 512 and k = 1000:

* Lloyd runs on a seeded subsample of max(10⁴, 16·k) rows when the input is larger (centres
  estimated from a dozen points each are as good for selection, and a pass costs n·k·d),
  and k-means++ seeds on max(2,000, 4·k) of those; then, if asked, one exact assignment pass
  covers every row.
* Lloyd iterations use Hamerly's bounds (Hamerly, SDM 2010): a row is re-examined only when
  its assigned centre may no longer be the nearest, so after the first pass most rows cost
  nothing. The result is exactly Lloyd's.
* Distances are computed in blocks, never n x k at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from alcli._threads import single_threaded_blas

from ._distances import FloatArray, nearest, row_chunks, squared_distances, squared_norms

#: Rows per cluster (and at least this many rows) kept when Lloyd runs on a subsample.
SAMPLE_PER_CLUSTER = 16
SAMPLE_FLOOR = 10_000
#: k-means++ (sequential, one pass per seed) runs on this smaller subsample.
SEED_SAMPLE_PER_CLUSTER = 4
SEED_SAMPLE_FLOOR = 2_000

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class KMeansResult:
    """Centres (k x d) and, for input rows ``rows``, their cluster and squared distance."""

    centres: F64
    rows: I64
    labels: I64
    sq_distances: F64


def kmeans_plus_plus(
    x: FloatArray,
    k: int,
    rng: np.random.Generator,
    *,
    weights: F64 | None = None,
) -> I64:
    """Row indices of k seeds by D² (times weight) sampling (Arthur & Vassilvitskii 2007).

    Rows at distance 0 from a chosen seed are never drawn again while any positive mass is
    left, so k distinct points come out whenever the data has k distinct rows.
    """
    n = x.shape[0]
    k = min(k, n)
    x_sq = squared_norms(x)
    w = np.ones(n) if weights is None else weights
    total = float(w.sum())
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = sample_proportional(w / total if total > 0 else np.full(n, 1.0 / n), rng)
    taken = np.zeros(n, dtype=bool)
    taken[chosen[0]] = True
    with single_threaded_blas():
        d2 = _distances_to_row(x, x_sq, int(chosen[0]))
        for i in range(1, k):
            mass = d2 * w
            mass[taken] = 0.0
            # when every remaining row duplicates a seed, take the lowest free index
            pick = (
                sample_proportional(mass, rng) if mass.sum() > 0 else int(np.flatnonzero(~taken)[0])
            )
            chosen[i] = pick
            taken[pick] = True
            np.minimum(d2, _distances_to_row(x, x_sq, pick), out=d2)
    return chosen


def sample_proportional(mass: F64, rng: np.random.Generator) -> int:
    """One index with probability proportional to ``mass`` (inverse CDF, one uniform)."""
    cdf = np.cumsum(mass)
    pick = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    if pick >= mass.size or mass[pick] <= 0:  # float edge of the CDF
        pick = int(np.flatnonzero(mass > 0)[-1])
    return pick


def _distances_to_row(x: FloatArray, x_sq: FloatArray, row: int) -> F64:
    d2 = (x_sq + x_sq[row] - 2.0 * (x @ x[row])).astype(np.float64)
    np.maximum(d2, 0.0, out=d2)
    d2[row] = 0.0
    return d2


def kmeans(
    x: FloatArray,
    k: int,
    rng: np.random.Generator,
    *,
    weights: F64 | None = None,
    max_iter: int = 30,
    tol: float = 1e-4,
    assign_all: bool = True,
    rows: I64 | None = None,
) -> KMeansResult:
    """k-means++ seeding then Lloyd iterations.

    ``weights`` (non-negative, one per row) weight both the seeding and the centre means
    (weighted k-means, as DBAL needs). Empty clusters are re-seeded with the row farthest
    from its centre. Stops when no assignment changes or no centre moves more than ``tol``
    times the data's mean variance. With ``assign_all=False`` the result covers only the
    rows Lloyd ran on (``result.rows``), saving the O(n·k·d) pass over the rest. ``rows``
    restricts clustering to those rows of ``x`` (default: all) without copying the rest;
    ``weights`` then has one entry per row of ``x``.
    """
    universe = np.arange(x.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    n = universe.size
    k = max(1, min(k, n))
    sample_size = max(SAMPLE_FLOOR, SAMPLE_PER_CLUSTER * k)
    if n > sample_size:
        chosen = universe[np.sort(rng.choice(n, size=sample_size, replace=False))]
    else:
        chosen = universe
    train = x if chosen.size == x.shape[0] else x[chosen]
    train_w = None if weights is None else weights[chosen]
    centres, labels, sq = _lloyd(train, k, rng, train_w, max_iter, tol)
    if assign_all and chosen.size < n:
        everything = x if n == x.shape[0] else x[universe]
        labels, sq = nearest(everything, centres)
        chosen = universe
    return KMeansResult(centres, chosen.astype(np.int64), labels, sq)


def _lloyd(
    x: FloatArray,
    k: int,
    rng: np.random.Generator,
    weights: F64 | None,
    max_iter: int,
    tol: float,
) -> tuple[F64, I64, F64]:
    """Lloyd's algorithm with Hamerly's bounds; returns centres, labels, squared distances."""
    n = x.shape[0]
    w = np.ones(n) if weights is None else weights.astype(np.float64)
    seed_size = max(SEED_SAMPLE_FLOOR, SEED_SAMPLE_PER_CLUSTER * k)
    if n > seed_size:
        pool = np.sort(rng.choice(n, size=seed_size, replace=False))
        seeds = pool[
            kmeans_plus_plus(x[pool], k, rng, weights=None if weights is None else w[pool])
        ]
    else:
        seeds = kmeans_plus_plus(x, k, rng, weights=weights)
    centres = x[seeds].astype(np.float64)
    x_sq = squared_norms(x)
    threshold = tol * float(np.mean(np.var(x, axis=0)))
    labels, upper, lower = _two_nearest(x, x_sq, centres)
    for _ in range(max_iter):
        new_centres = _weighted_means(x, labels, w, centres, upper)
        moved = np.sqrt(np.sum((new_centres - centres) ** 2, axis=1))
        centres = new_centres
        upper += moved[labels]
        lower -= moved.max()
        changed = _hamerly_pass(x, x_sq, centres, labels, upper, lower)
        if not changed or moved.max() ** 2 <= threshold:
            break
    sq = _sq_to_assigned(x, centres, labels)
    return centres, labels, sq


def _two_nearest(x: FloatArray, x_sq: FloatArray, centres: F64) -> tuple[I64, F64, F64]:
    """Nearest centre, its distance and the second-nearest distance (inf if k = 1)."""
    c = centres.astype(x.dtype)
    c_sq = squared_norms(c)
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    first = np.empty(n)
    second = np.full(n, np.inf)
    for part in row_chunks(n, c.shape[0]):
        block = squared_distances(x[part], c, x_sq[part], c_sq)
        idx = np.argmin(block, axis=1)
        labels[part] = idx
        rows = np.arange(block.shape[0])
        first[part] = block[rows, idx]
        if c.shape[0] > 1:
            block[rows, idx] = np.inf
            second[part] = block.min(axis=1)
    return labels, np.sqrt(first), np.sqrt(second)


def _hamerly_pass(
    x: FloatArray, x_sq: FloatArray, centres: F64, labels: I64, upper: F64, lower: F64
) -> bool:
    """Reassign only rows whose bounds allow a closer centre; True if any label changed."""
    if centres.shape[0] == 1:
        return False
    gaps = np.sqrt(squared_distances(centres, centres))
    np.fill_diagonal(gaps, np.inf)
    limit = np.maximum(lower, 0.5 * gaps.min(axis=1)[labels])
    suspect = np.flatnonzero(upper > limit)
    if suspect.size == 0:
        return False
    upper[suspect] = np.sqrt(_sq_to_assigned(x[suspect], centres, labels[suspect]))
    suspect = suspect[upper[suspect] > limit[suspect]]
    if suspect.size == 0:
        return False
    new_labels, new_upper, new_lower = _two_nearest(x[suspect], x_sq[suspect], centres)
    changed = bool(np.any(new_labels != labels[suspect]))
    labels[suspect], upper[suspect], lower[suspect] = new_labels, new_upper, new_lower
    return changed


def _sq_to_assigned(x: FloatArray, centres: F64, labels: I64) -> F64:
    """Exact squared distance from each row to its assigned centre, in float64."""
    out = np.empty(x.shape[0])
    for part in row_chunks(x.shape[0], x.shape[1]):
        out[part] = squared_norms(x[part] - centres[labels[part]])
    return out


def _weighted_means(x: FloatArray, labels: I64, w: F64, old: F64, upper: F64) -> F64:
    """Per-cluster weighted means; an empty (or zero-weight) cluster takes the worst-fit row."""
    k, n = old.shape[0], x.shape[0]
    membership = sparse.csr_matrix((w, (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(membership @ x, dtype=np.float64)
    mass = np.bincount(labels, weights=w, minlength=k)
    centres = old.copy()
    filled = mass > 0
    centres[filled] = sums[filled] / mass[filled, None]
    empty = np.flatnonzero(~filled)
    if empty.size:
        # Farthest rows (ties to the lower index) become the new centres, one per empty slot.
        order = np.lexsort((np.arange(n), -(upper * np.maximum(w, 1e-12))))
        centres[empty] = x[order[: empty.size]]
    return centres


def nearest_member_per_cluster(result: KMeansResult, k: int) -> tuple[I64, I64]:
    """For each non-empty cluster: the member closest to its centre (ties to the lower row).

    Returns (cluster ids, input row indices); members are distinct (one cluster per row).
    """
    order = np.lexsort((result.rows, result.sq_distances, result.labels))
    sorted_labels = result.labels[order]
    first = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    clusters = sorted_labels[first]
    keep = clusters < k
    return clusters[keep], result.rows[order[first][keep]]


def group_by_label(labels: I64, sizes: I64) -> list[I64]:
    """Positions of each label's rows, ascending; ``sizes = np.bincount(labels, minlength=k)``."""
    by_label = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return [by_label[starts[c] : starts[c + 1]] for c in range(sizes.size)]
