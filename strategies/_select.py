"""What every strategy receives and the arg-select helpers they share.

Input validation lives here, once, so a strategy body can assume clean arrays: finite values,
consistent pool size, a boolean labeled mask and a seeded generator. The ranking helpers own
the zoo-wide tie rule (equal scores go to the lower pool index) so no strategy re-derives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from alcli.errors import StrategyError

FloatArray = npt.NDArray[np.floating[Any]]
IndexArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: The arrays a strategy can declare in ``needs`` (``labeled`` means "at least one item").
NEEDS = frozenset({"probs", "committee", "embeddings", "labeled"})

_PROB_SUM_TOLERANCE = 1e-3
_PROB_RANGE_TOLERANCE = 1e-5


class Picks(NamedTuple):
    """Pool indices in pick order and each pick's score (NaN where a strategy has none)."""

    indices: IndexArray
    scores: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SelectionContext:
    """Validated inputs of one selection; strategies read only this.

    ``budget`` is already clipped to the unlabeled count and is at least 1 when a strategy
    runs. Arrays keep their float32/float64 dtype (anything else arrives as float32) and are
    never copied here, so strategies must not write into them.
    """

    budget: int
    n: int
    labeled: BoolArray
    unlabeled: IndexArray
    rng: np.random.Generator
    probs: FloatArray | None = None
    committee: FloatArray | None = None
    embeddings: FloatArray | None = None

    @property
    def n_labeled(self) -> int:
        return self.n - int(self.unlabeled.size)

    def require_probs(self) -> FloatArray:
        """The n x C probabilities; raises if the strategy forgot to declare the need."""
        return _required(self.probs, "probs")

    def require_committee(self) -> FloatArray:
        """The K x n x C committee probabilities."""
        return _required(self.committee, "committee")

    def require_embeddings(self) -> FloatArray:
        """The n x d embeddings."""
        return _required(self.embeddings, "embeddings")

    def unpicked(self, picks: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Unlabeled pool indices not among ``picks``, ascending."""
        free = ~self.labeled
        free[np.asarray(picks, dtype=np.int64)] = False
        return np.flatnonzero(free)


def _required(array: FloatArray | None, name: str) -> FloatArray:
    if array is None:
        raise StrategyError(
            f"this strategy reads {name} but does not declare it in needs",
            hint=f"add {name!r} to the strategy's needs",
        )
    return array


def as_generator(seed: int | np.integer[Any] | np.random.Generator) -> np.random.Generator:
    """The strategy's only source of randomness: a Generator passed in or built from a seed."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise StrategyError(
            f"seed must be a non-negative integer or a numpy Generator, got {seed!r}",
            hint="pass seed=0 or seed=np.random.default_rng(0)",
        )
    return np.random.default_rng(int(seed))


def check_budget(budget: object) -> int:
    """The requested number of picks as an int; negative or non-integer budgets are errors."""
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer):
        raise StrategyError(
            f"budget must be an integer, got {budget!r}", hint="pass e.g. budget=100"
        )
    if budget < 0:
        raise StrategyError(
            f"budget must be 0 or more, got {budget}", hint="pass the number of items to pick"
        )
    return int(budget)


def as_float_array(array: object, name: str, ndim: int) -> FloatArray:
    """``array`` as a float32/float64 ndarray of ``ndim`` dims, without copying when possible."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "fiub":
        raise StrategyError(
            f"{name} must be numeric, got dtype {arr.dtype}",
            hint=f"pass {name} as a float array",
        )
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    if arr.ndim != ndim:
        raise StrategyError(
            f"{name} must have {ndim} dimensions, got shape {arr.shape}",
            hint=_SHAPE_HINTS[name],
        )
    return arr


_SHAPE_HINTS = {
    "probs": "pass an n x C array of class probabilities",
    "committee": "pass a K x n x C array: one n x C probability array per committee member",
    "embeddings": "pass an n x d array, one row per pool item",
}


def pool_size(arrays: dict[str, FloatArray], labeled: object) -> int:
    """The pool size implied by the arrays (and a boolean mask), checking they agree."""
    sizes = {
        name: (arr.shape[1] if name == "committee" else arr.shape[0])
        for name, arr in arrays.items()
    }
    mask = np.asarray(labeled) if labeled is not None else None
    if mask is not None and mask.dtype == np.bool_ and mask.ndim == 1:
        sizes["labeled mask"] = mask.shape[0]
    distinct = set(sizes.values())
    if len(distinct) > 1:
        shown = ", ".join(f"{name} has {size}" for name, size in sizes.items())
        raise StrategyError(
            f"inputs disagree on the pool size: {shown}",
            hint="pass arrays whose rows are the same pool items, in the same order",
        )
    if not distinct:
        raise StrategyError(
            "cannot tell the pool size: no probs, committee, embeddings or labeled mask given",
            hint="pass the arrays the strategy needs, or labeled as a boolean mask",
        )
    return distinct.pop()


def labeled_mask(labeled: object, n: int) -> BoolArray:
    """Normalise ``labeled`` (None, a boolean mask of length n, or indices) to a mask."""
    mask = np.zeros(n, dtype=np.bool_)
    if labeled is None:
        return mask
    arr = np.asarray(labeled)
    if arr.size == 0:
        return mask
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise StrategyError(
                f"labeled mask has shape {arr.shape}, but the pool has {n} items",
                hint="pass a boolean mask of length n or an array of labeled indices",
            )
        return arr.copy()
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise StrategyError(
            f"labeled must be a boolean mask or 1-D integer indices, got dtype {arr.dtype} "
            f"with shape {arr.shape}",
            hint="pass labeled=mask (bool, length n) or labeled=indices (int)",
        )
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise StrategyError(
            f"labeled index {int(bad[0])} is outside the pool of {n} items",
            hint="labeled indices must be positions 0..n-1 in the arrays",
        )
    mask[arr] = True
    return mask


def check_finite(array: FloatArray, name: str) -> None:
    """Reject NaN/inf with the first offending row, at the cost of two reductions."""
    if array.size == 0:
        return
    if np.isfinite(array.min()) and np.isfinite(array.max()):
        return
    rows = ~np.isfinite(array).reshape(-1, array.shape[-1]).all(axis=1)
    flat = int(np.flatnonzero(rows)[0])
    where = (
        f"member {flat // array.shape[1]}, row {flat % array.shape[1]}"
        if array.ndim == 3
        else f"row {flat}"
    )
    raise StrategyError(
        f"{name} contains NaN or inf (first at {where})",
        hint="fix or drop the items whose model outputs are not finite",
    )


def check_probabilities(array: FloatArray, name: str) -> None:
    """Rows must be probability vectors: logits or unnormalised scores are a silent bug."""
    if array.size == 0:
        return
    low, high = float(array.min()), float(array.max())
    flat = array.reshape(-1, array.shape[-1])
    sums = flat @ np.ones(flat.shape[1], dtype=flat.dtype)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if (
        low < -_PROB_RANGE_TOLERANCE
        or high > 1.0 + _PROB_RANGE_TOLERANCE
        or abs(float(sums[worst]) - 1.0) > _PROB_SUM_TOLERANCE
    ):
        raise StrategyError(
            f"{name} rows must be probabilities in [0, 1] summing to 1 (values span "
            f"[{low:.4g}, {high:.4g}], row {worst} sums to {float(sums[worst]):.4g})",
            hint="pass softmax outputs, not logits",
        )


def top_k(scores: npt.NDArray[np.floating[Any]], k: int, *, largest: bool) -> IndexArray:
    """Positions of the ``k`` best scores, best first; equal scores keep ascending position.

    ``np.partition`` finds the cut in O(n); only the survivors are sorted, with the position
    as the secondary key, and ties at the cut go to the lowest positions.
    """
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    key = -scores if largest else scores
    if k < n:
        cut = np.partition(key, k - 1)[k - 1]
        better = np.flatnonzero(key < cut)
        tied = np.flatnonzero(key == cut)[: k - better.size]
        candidates = np.concatenate([better, tied])
    else:
        candidates = np.arange(n)
    order = np.lexsort((candidates, key[candidates]))
    return candidates[order].astype(np.int64, copy=False)


def rank_unlabeled(
    ctx: SelectionContext,
    scores: npt.NDArray[np.floating[Any]],
    *,
    largest: bool,
    count: int | None = None,
) -> Picks:
    """The ``count`` (default ``ctx.budget``) unlabeled items with the best per-item ``scores``.

    ``scores`` has one entry per pool item (length n); ranking follows :func:`top_k`.
    """
    candidate_scores = scores[ctx.unlabeled]
    positions = top_k(candidate_scores, ctx.budget if count is None else count, largest=largest)
    return Picks(ctx.unlabeled[positions], candidate_scores[positions].astype(np.float64))


def no_scores(indices: npt.NDArray[np.integer[Any]]) -> Picks:
    """Picks for a strategy that has no meaningful per-pick score."""
    return Picks(np.asarray(indices, dtype=np.int64), np.full(len(indices), np.nan))
