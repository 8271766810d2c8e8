"""Exact greedy k-center (farthest-first traversal) with triangle-inequality pruning.

The plain loop costs one n x d matrix-vector product per pick. Here rows are first grouped by
a cheap k-means and stored, group by group, as residuals from their group centre. When a new
centre c is picked, a group g can only change if some member x has ||x - c|| below its
current distance to the nearest centre; since ||x - c|| >= ||c - m_g|| - r_g (m_g the group
centre, r_g its radius), the whole group is skipped when that bound already exceeds the
group's largest current distance. Skipping never changes a result, so the picks are exactly
those of the plain algorithm; on clustered embeddings most groups are skipped on most picks.
Residuals also make the ``||a||² + ||b||² - 2a·b`` expansion far less prone to cancellation
than raw coordinates, which keeps float32 results close to a float64 reference.

At 1280 dims (MNIST's MobileNetV2 features) the group bound skipped ~5 % of groups, so each
pick was still a pass over every row. A second, per-row bound (``_Groups.project``) uses each
row's 64 coordinates in the main directions of the group centres plus the norm of the rest:
one n x 64 product per pick bounds every row's distance to the new centre from below, and
only the 10-100 rows of 50,000 it does not clear are computed exactly; the labeled rows'
distances are bounded the same way, block by block. Same picks; 800 picks on MNIST 16.8 s
-> 1.7 s, the labeled rows 12.4 s -> 6.6 s (benchmarks/RESULTS.md, issue 18 session 9).

The grouping (a fixed-seed k-means and a residual copy of the rows) depends on the rows alone,
so it is remembered for the last array it was built for: ``alcli auto`` runs coreset on the
same pool every round, and on 50,000 x 1280 MNIST features the grouping was a third of each
call. Reusing it changes no pick (the picks never depend on the grouping).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from alcli._threads import single_threaded_blas

from ._distances import FloatArray, row_chunks, squared_distances, squared_norms
from ._kmeans import kmeans

#: Below this many rows grouping does not pay for itself: one group, no residual shift.
MIN_ROWS_TO_GROUP = 2048
MAX_GROUPS = 128
#: Labeled centres are applied to a group in blocks of this many, nearest first.
LABELED_BLOCK = 64
#: Skip a group only when its bound beats the group's max by this relative margin, so float
#: rounding in the bound can never skip a group that would have changed.
SKIP_MARGIN = 1.0 + 1e-4
#: Coordinates per row in the row bound (``_Groups.project``).
PROJECTED_DIMS = 64


class _Groups:
    """Rows sorted by group, stored as residuals from the group centre."""

    def __init__(self, x: FloatArray) -> None:
        n = x.shape[0]
        n_groups = 1 if n < MIN_ROWS_TO_GROUP else int(min(MAX_GROUPS, round(np.sqrt(n) / 2)))
        if n_groups == 1:
            labels = np.zeros(n, dtype=np.int64)
            centres = np.zeros((1, x.shape[1]))
        else:
            # A fixed seed: grouping only decides what can be skipped, never what is picked.
            result = kmeans(x, n_groups, np.random.default_rng(0), max_iter=5)
            labels, centres = result.labels, result.centres
        self.perm = np.argsort(labels, kind="stable")
        self.position = np.empty(n, dtype=np.int64)
        self.position[self.perm] = np.arange(n)
        counts = np.bincount(labels, minlength=centres.shape[0])
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.group_of = np.repeat(np.arange(centres.shape[0]), counts)
        self.centres = centres
        self.centre_sq = squared_norms(centres)
        self.residuals = x[self.perm]
        for g in np.flatnonzero(counts):
            self.residuals[self.slice(g)] -= centres[g].astype(x.dtype)
        self.residual_sq = squared_norms(self.residuals)
        self.radius = np.zeros(centres.shape[0])
        for g in np.flatnonzero(counts):
            self.radius[g] = np.sqrt(float(self.residual_sq[self.slice(g)].max()))
        self.nonempty = counts > 0
        self.project(x)
        #: The last labeled set's distances (``to_labeled``), kept for the next call.
        self._seen: npt.NDArray[np.bool_] | None = None
        self._seen_sq: FloatArray | None = None
        self._lock = threading.Lock()

    def project(self, x: FloatArray) -> None:
        """Each row's coordinates in the span of the group centres, and what is left over.

        For any orthonormal basis Q and any rows a, b (both shifted by the same mean),
        ``||a − b||² = ||Qᵀ(a − b)||² + ||rest(a) − rest(b)||² ≥ ||Qᵀa − Qᵀb||² +
        (||rest(a)|| − ||rest(b)||)²``: a lower bound from G ≤ 128 numbers per row instead
        of d. The centres' span holds the directions the clusters lie along, so for a far
        new centre the bound is close; a row whose bound already exceeds its distance to its
        nearest centre cannot change, so only the others are computed exactly
        (``_add_centre``). Computed once per grouping, in float64 (then stored float32).
        """
        n = x.shape[0]
        self.mean = x.mean(axis=0, dtype=np.float64)
        spread = self.centres[self.nonempty] - self.mean
        if n < MIN_ROWS_TO_GROUP or spread.shape[0] < 2:
            self.basis: npt.NDArray[np.float64] | None = None
            return
        # the centres' main directions, orthonormal (d x k), strongest first
        _, _, vt = np.linalg.svd(spread, full_matrices=False)
        basis = np.ascontiguousarray(vt[:PROJECTED_DIMS].T)
        self.basis = basis
        proj = np.empty((n, basis.shape[1]), dtype=np.float32)
        tail = np.empty(n, dtype=np.float64)
        for rows in row_chunks(n, x.shape[1]):
            shifted = x[self.perm[rows]].astype(np.float64) - self.mean
            z = shifted @ basis
            proj[rows] = z
            tail[rows] = np.einsum("ij,ij->i", shifted, shifted) - np.einsum("ij,ij->i", z, z)
        self.proj = proj
        self.proj_sq = squared_norms(proj.astype(np.float64))
        self.tail = np.sqrt(np.maximum(tail, 0.0))

    def to_labeled(
        self, x: FloatArray, labeled: npt.NDArray[np.bool_], *, row_bound: bool = True
    ) -> FloatArray:
        """Each row's squared distance to its nearest labeled row (inf: none), group order.

        A pool's labeled set only grows between rounds of ``alcli auto``, so the last call's
        distances are the start whenever its set is contained in this one, and only the rows
        labeled since are applied (on 50,000 x 1280 MNIST with 5,000 labels this was the
        larger half of a call). The minimum over centres does not depend on the order they
        are applied in; a distance computed in a matrix block of other centres can differ
        from a cold call's in its last float bit, so two runs can differ only where two
        candidates' distances agree to the last bit.
        """
        with self._lock:
            seen, seen_sq = self._seen, self._seen_sq
            if seen is not None and seen_sq is not None and not (seen & ~labeled).any():
                min_sq, new = seen_sq.copy(), np.flatnonzero(labeled & ~seen)
            else:
                min_sq = np.full(x.shape[0], np.inf, dtype=x.dtype)
                new = np.flatnonzero(labeled)
            if new.size:
                _apply_labeled(self, x, new, min_sq, row_bound=row_bound)
            self._seen, self._seen_sq = labeled.copy(), min_sq.copy()
        return min_sq

    def slice(self, g: int | np.integer[Any]) -> slice:
        return slice(int(self.bounds[g]), int(self.bounds[g + 1]))

    def centre_distances(self, point: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        d2 = self.centre_sq + point @ point - 2.0 * (self.centres @ point)
        return np.sqrt(np.maximum(d2, 0.0))


#: The last grouping built: (a weak reference to its array, the array's layout, the grouping).
_last_groups: tuple[weakref.ref[Any], tuple[Any, ...], _Groups] | None = None
_groups_lock = threading.Lock()


def _groups_for(x: FloatArray) -> _Groups:
    """``_Groups(x)``, reused while ``x`` is the same, unchanged-shape array as last time.

    Held through a weak reference, and dropped when the array is: a one-off ``select`` keeps
    nothing alive. An array written in place between calls would need a fresh grouping; the
    pool's embeddings never are.
    """
    global _last_groups
    layout = (x.shape, x.dtype.str, x.__array_interface__["data"][0], x.strides)
    with _groups_lock:
        if _last_groups is not None:
            ref, seen, groups = _last_groups
            if ref() is x and seen == layout:
                return groups
        groups = _Groups(x)
        _last_groups = (weakref.ref(x, _forget_groups), layout, groups)
        return groups


def _forget_groups(_ref: weakref.ref[Any]) -> None:
    global _last_groups
    if _last_groups is not None and _last_groups[0] is _ref:
        _last_groups = None


def greedy_k_center(
    x: FloatArray, labeled: npt.NDArray[np.bool_], budget: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Farthest-first picks from the unlabeled rows and each pick's distance to its centre.

    Starts from the labeled rows as centres, or (none labeled) from the row nearest the
    mean, whose score is NaN. Ties go to the lower row index.
    """
    groups = _groups_for(x)
    with single_threaded_blas():
        return _farthest_first(groups, x, labeled, budget)


def _farthest_first(
    groups: _Groups,
    x: FloatArray,
    labeled: npt.NDArray[np.bool_],
    budget: int,
    *,
    row_bound: bool = True,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``greedy_k_center`` on a grouping; ``row_bound=False`` prunes by groups only (the
    reference the row bound is checked against: the same picks and scores, bit for bit)."""
    labeled_rows = np.flatnonzero(labeled)
    min_sq = groups.to_labeled(x, labeled, row_bound=row_bound)  # in sorted (group) order
    if labeled_rows.size:
        min_sq[groups.position[labeled_rows]] = -np.inf
    group_max = np.full(groups.centres.shape[0], -np.inf)
    for g in np.flatnonzero(groups.nonempty):
        group_max[g] = float(min_sq[groups.slice(g)].max())

    picks = np.empty(budget, dtype=np.int64)
    scores = np.empty(budget, dtype=np.float64)
    for t in range(budget):
        if t == 0 and not labeled_rows.size:
            row, score = _nearest_to_mean(x), np.nan
        else:
            row, score = _farthest(groups, min_sq, group_max)
        picks[t], scores[t] = row, score
        pos = groups.position[row]
        min_sq[pos] = -np.inf
        if t + 1 < budget:
            _add_centre(
                groups,
                x[row].astype(np.float64),
                min_sq,
                group_max,
                int(pos) if row_bound else None,
            )
        else:
            g = groups.group_of[pos]
            group_max[g] = float(min_sq[groups.slice(g)].max())
    return picks, scores


def _farthest(
    groups: _Groups, min_sq: FloatArray, group_max: npt.NDArray[np.float64]
) -> tuple[int, float]:
    top = float(group_max.max())
    best = -1
    for g in np.flatnonzero(group_max == top):
        part = groups.slice(g)
        hits = np.flatnonzero(min_sq[part] == top) + part.start
        row = int(groups.perm[hits].min())
        best = row if best < 0 else min(best, row)
    return best, float(np.sqrt(max(top, 0.0)))


def _add_centre(
    groups: _Groups,
    centre: npt.NDArray[np.float64],
    min_sq: FloatArray,
    group_max: npt.NDArray[np.float64],
    pos: int | None = None,
) -> None:
    """Lower every row's distance to its nearest centre by the new centre, where it can.

    ``pos``: the centre's row in group order, whose projection (``_Groups.project``) bounds
    every row's distance to it from below; rows the bound clears are not computed. Without
    it (or a projection) every group the group bound does not skip is computed whole.
    """
    bound = groups.centre_distances(centre) - groups.radius
    skip = ((bound > 0) & (bound * bound >= group_max * SKIP_MARGIN)) | (group_max == -np.inf)
    dtype = min_sq.dtype
    todo = np.flatnonzero(~skip)
    if pos is not None and groups.basis is not None and todo.size:
        may = _may_change(groups, pos, min_sq)
        hits = np.bincount(groups.group_of[may], minlength=groups.centres.shape[0])
        # the centre's own group always: its max was the centre, now -inf
        todo = todo[(hits[todo] > 0) | (todo == groups.group_of[pos])]
    else:
        may, hits = None, None
    for g in todo:
        part = groups.slice(g)
        shift = (centre - groups.centres[g]).astype(dtype)
        shift_sq = shift @ shift
        size = part.stop - part.start
        if may is None or hits is None or hits[g] * GATHER_BELOW >= size:
            d2 = groups.residuals[part] @ shift
            d2 *= -2.0
            d2 += groups.residual_sq[part]
            d2 += shift_sq
            np.maximum(d2, 0.0, out=d2)
            view = min_sq[part]
            np.minimum(view, d2, out=view)
            group_max[g] = float(view.max())
            continue
        lo, hi = np.searchsorted(may, [part.start, part.stop])
        rows = may[lo:hi]
        d2 = groups.residuals[rows] @ shift
        d2 *= -2.0
        d2 += groups.residual_sq[rows]
        d2 += shift_sq
        np.maximum(d2, 0.0, out=d2)
        min_sq[rows] = np.minimum(min_sq[rows], d2)
        group_max[g] = float(min_sq[part].max())


#: A group with fewer than 1/GATHER_BELOW of its rows left by the row bound has just those
#: rows computed (gathered); otherwise the whole group, contiguous, is cheaper.
GATHER_BELOW = 4
#: Slack on the row bound for float rounding: relative, and relative to the projected norms
#: (the float32 expansion ``|a|² + |b|² − 2a·b`` over G ≤ 128 terms errs by < 1e-5 of them).
BOUND_SLACK = 2e-5


def _may_change(groups: _Groups, pos: int, min_sq: FloatArray) -> npt.NDArray[np.int64]:
    """Rows (group order, ascending) whose lower bound to the centre at ``pos`` is below
    their current distance: only they can be lowered by it."""
    z = groups.proj
    lb = z @ z[pos]
    lb = lb.astype(np.float64)
    lb *= -2.0
    lb += groups.proj_sq
    lb += groups.proj_sq[pos]
    lb -= BOUND_SLACK * (groups.proj_sq + groups.proj_sq[pos])
    np.maximum(lb, 0.0, out=lb)
    lb += (groups.tail - groups.tail[pos]) ** 2
    lb *= 1.0 - BOUND_SLACK
    return np.flatnonzero(lb < min_sq * SKIP_MARGIN)


def _apply_labeled(
    groups: _Groups,
    x: FloatArray,
    labeled_rows: npt.NDArray[np.int64],
    min_sq: FloatArray,
    *,
    row_bound: bool = True,
) -> None:
    """Distances to the nearest labeled row, blockwise, skipping blocks that cannot help.

    With ``row_bound`` (and a projection), each block of labeled rows is first bounded
    against the group's rows on their projections (``_Groups.project``: 64 numbers a row,
    not d), and only the rows some labeled row may come closer to are computed exactly.
    """
    centres_l = x[labeled_rows].astype(np.float64)
    to_groups = np.sqrt(squared_distances(centres_l, groups.centres))
    dtype = min_sq.dtype
    bounded = row_bound and groups.basis is not None
    if bounded:
        where = groups.position[labeled_rows]
        z_l, z_l_sq, tail_l = groups.proj[where], groups.proj_sq[where], groups.tail[where]
    for g in np.flatnonzero(groups.nonempty):
        part = groups.slice(g)
        block_r = groups.residuals[part]
        block_sq = groups.residual_sq[part]
        view = min_sq[part]
        order = np.argsort(to_groups[:, g], kind="stable")
        current_max = float(view.max())  # inf until every row has a labeled row near it
        for start in range(0, order.size, LABELED_BLOCK):
            sel = order[start : start + LABELED_BLOCK]
            bound = to_groups[sel[0], g] - groups.radius[g]
            if bound > 0 and bound * bound >= current_max * SKIP_MARGIN:
                break
            shifts = (centres_l[sel] - groups.centres[g]).astype(dtype)
            rows: npt.NDArray[np.int64] | None = None
            if bounded and np.isfinite(current_max):
                lb = (groups.proj[part] @ z_l[sel].T).astype(np.float64)
                lb *= -2.0
                norms = groups.proj_sq[part][:, None] + z_l_sq[sel][None, :]
                lb += norms * (1.0 - BOUND_SLACK)
                np.maximum(lb, 0.0, out=lb)
                lb += (groups.tail[part][:, None] - tail_l[sel][None, :]) ** 2
                lb *= 1.0 - BOUND_SLACK
                rows = np.flatnonzero((lb < view[:, None] * SKIP_MARGIN).any(axis=1))
                if not rows.size:
                    continue
                if rows.size * GATHER_BELOW >= view.size:
                    rows = None
            if rows is None:
                block = squared_distances(block_r, shifts, block_sq, squared_norms(shifts))
                np.minimum(view, block.min(axis=1), out=view)
            else:
                block = squared_distances(
                    block_r[rows], shifts, block_sq[rows], squared_norms(shifts)
                )
                view[rows] = np.minimum(view[rows], block.min(axis=1))
            current_max = float(view.max())


def _nearest_to_mean(x: FloatArray) -> int:
    """The row closest to the column mean (ties to the lower index), computed in float64."""
    mean = x.mean(axis=0, dtype=np.float64)
    best_row, best = -1, np.inf
    for rows in row_chunks(x.shape[0], x.shape[1]):
        d2 = ((x[rows] - mean) ** 2).sum(axis=1)
        i = int(np.argmin(d2))
        if d2[i] < best:
            best_row, best = rows.start + i, float(d2[i])
    return best_row
