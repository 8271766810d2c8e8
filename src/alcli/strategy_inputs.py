"""What a strategy reads from a model: the pool's class probabilities, a committee's.

``select`` and ``auto`` both turn labeled rows into these, by the same rules, here: a head on
the labeled rows predicts the pool ("probs"); a committee predicts it K times ("committee"):
samples of the head's Laplace posterior by default, or bootstrap heads
(``alcli.learner.committee``). The head is of the kind the caller chose (``space``:
``alcli.learner.semisup.HEAD_KINDS``), so every strategy reads the chosen
head's probabilities. A strategy that needs neither (a cold-start one) costs no training.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from alcli.learner import (
    Head,
    HeadSpace,
    Scaler,
    fit_head,
    laplace_committee,
    train_committee,
    train_head,
)

if TYPE_CHECKING:
    from alcli.rows import PoolRows


@dataclass(frozen=True)
class StrategyInputs:
    """The model outputs a strategy asked for (None where it did not), and their cost."""

    probs: NDArray[np.float32] | None
    committee: NDArray[np.float32] | None
    #: Seconds spent "heads" (fitting) and "predict" (predicting the pool).
    seconds: dict[str, float] = field(default_factory=dict)


def strategy_inputs(
    needs: Collection[str],
    pool: NDArray[Any],
    rows: Sequence[int] | NDArray[np.int64],
    labels: Sequence[Hashable],
    *,
    scaler: Scaler,
    seed: int,
    committee_size: int,
    l2: float = 1.0,
    head: Head | None = None,
    probs: NDArray[np.float32] | None = None,
    classes: NDArray[Any] | None = None,
    space: HeadSpace | None = None,
    posterior: str = "laplace",
) -> StrategyInputs:
    """Probabilities over ``pool`` from heads on ``pool[rows]`` (``labels``), as ``needs`` asks.

    ``head``: the head on these rows when the caller keeps one (the agent trains each once);
    it gives the probabilities and is where the committee's members start (their optimum is
    near it). Without it, a head is trained when probabilities are needed, and the committee
    starts from zeros. ``probs``: the pool's probabilities under that head, already computed
    (for another strategy), used as they are. ``classes``: spread the class axis over these
    (every label seen so far), so a head that has seen one class still yields a matrix that
    margin or entropy can rank; None keeps each model's own classes. ``space``: where heads
    of the chosen kind live (its pool features and scaler replace ``pool`` and ``scaler``
    for the model; strategies still get the caller's embeddings). ``posterior``: "laplace"
    (samples of the head's posterior, drawn from a Generator seeded with ``seed``) or
    "bootstrap" (heads on resamples).
    """
    seconds: dict[str, float] = {}
    rows_arr = np.asarray(rows, dtype=np.int64)
    if space is not None:
        pool, scaler = space.pool, space.scaler
    committee = None
    if "committee" in needs:
        if posterior == "laplace" and head is None:
            with _timed(seconds, "heads"):
                head = _fit(space, pool, rows_arr, labels, l2=l2, scaler=scaler)
        with _timed(seconds, "heads"):
            if posterior == "laplace":
                assert head is not None
                members = laplace_committee(
                    head,
                    pool[rows_arr],
                    k=committee_size,
                    rng=np.random.default_rng(seed),
                    l2=l2,
                    scaler=scaler,
                )
            else:
                members = train_committee(
                    pool[rows_arr],
                    labels,
                    k=committee_size,
                    seed=seed,
                    l2=l2,
                    scaler=scaler,
                    init=head,
                )
        with _timed(seconds, "predict"):
            committee = _aligned(members.proba(pool), members.classes, classes)
    if "probs" not in needs:
        probs = None
    elif probs is None:
        if head is None:
            with _timed(seconds, "heads"):
                head = _fit(space, pool, rows_arr, labels, l2=l2, scaler=scaler)
        with _timed(seconds, "predict"):
            probs = _aligned(head.predict_proba(pool), head.classes, classes)
    return StrategyInputs(probs=probs, committee=committee, seconds=seconds)


def _fit(
    space: HeadSpace | None,
    pool: NDArray[Any],
    rows: NDArray[np.int64],
    labels: Sequence[Hashable],
    *,
    l2: float,
    scaler: Scaler,
) -> Head:
    """The chosen kind's head, or (no ``space``) the logistic head on ``pool[rows]``."""
    if space is not None:
        return fit_head(space, rows, labels, l2=l2)
    return train_head(pool[rows], labels, l2=l2, scaler=scaler)


@contextmanager
def _timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started


def _aligned(
    probs: NDArray[np.float32], own: NDArray[Any], classes: NDArray[Any] | None
) -> NDArray[np.float32]:
    """The last axis of ``probs`` (over ``own`` classes) spread over ``classes``; others get 0."""
    if classes is None or len(own) == len(classes):
        return probs
    out = np.zeros((*probs.shape[:-1], len(classes)), dtype=np.float32)
    out[..., np.searchsorted(classes, own)] = probs
    return out


def head_predictions(
    rows: NDArray[np.int64],
    pool: NDArray[Any] | PoolRows | None,
    uris: Sequence[str],
    labels: Mapping[str, str],
    *,
    probs: NDArray[Any] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> list[str] | None:
    """The class a head predicts for pool ``rows``: Label Studio's pre-annotations.

    The user's own ``probs``: their argmax column (its index, the only name it has). Else a
    head on the labeled rows, trained as ``select``'s (same scaler and L2, so the same
    predictions as the head the strategy read); None when there are no labels (cold start).
    """
    if probs is not None:
        return [str(int(c)) for c in np.argmax(np.asarray(probs)[rows], axis=1)]
    skipped = skipped or {}
    known = {uri: label for uri, label in labels.items() if uri not in skipped}
    if pool is None or not known:
        return None
    from alcli.labels import match_labels
    from alcli.learner import fit_scaler

    labeled_rows, values = match_labels(uris, known)
    # A streamed pool (alcli.rows): the scaler select remembered for these rows (no second
    # pass over the pool), and only the labeled and picked rows gathered.
    from alcli.rows import PoolRows
    from alcli.scale import pool_scaler

    scaler = pool_scaler(pool) if isinstance(pool, PoolRows) else fit_scaler(pool)
    head = train_head(pool[labeled_rows], values, l2=1.0, scaler=scaler)
    return [str(c) for c in head.predict(pool[rows])]
