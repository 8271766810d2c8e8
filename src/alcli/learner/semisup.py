"""Which head a round trains: ``logistic``, ``graph`` or ``selftrain``, one entry point for all.

Every kind ends in an ordinary ``Head`` (a logistic regression), so strategies, committees,
evaluation and the agent's head store treat them alike, and a head still applies to any
array of rows (chunk by chunk):

``logistic``
    The head on the labeled rows alone (``alcli.learner.heads``).
``graph``
    The same head on embeddings smoothed over the pool's kNN graph (``alcli.learner.graph``):
    the unlabeled pool shapes the features every head sees. ``HeadSpace`` holds the smoothed
    pool; rows outside the pool (an eval set) are smoothed over their neighbours in it.
``selftrain``
    Self-training (Yarowsky 1995; Lee, Pseudo-Label, ICML-W 2013): the logistic head, then the
    pool rows it predicts with probability ≥ ``threshold`` join the training set with their
    predicted label (at most ``ratio`` × the labeled count, the most confident first, split
    evenly over the predicted classes so no class floods the set), and the head is refitted
    once from the first. Deterministic: no random draw, ties to the lower row.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alcli.errors import UsageError
from alcli.learner.graph import DEFAULT_SMOOTH, PoolGraph, build_graph
from alcli.learner.heads import Head, Scaler, fit_scaler, train_head

HEAD_KINDS = ("logistic", "graph", "selftrain")
DEFAULT_HEAD = "logistic"
#: Self-training keeps pool rows predicted at least this confidently.
SELFTRAIN_THRESHOLD = 0.99
#: ...and at most this many per labeled row (bounds the refit: 400 labels -> 12,000 rows).
SELFTRAIN_RATIO = 30


def check_head(kind: str) -> str:
    """``kind`` normalised, or ``UsageError`` naming the choices."""
    name = kind.strip().lower()
    if name not in HEAD_KINDS:
        raise UsageError(f"unknown head {kind!r}", hint=f"use one of {', '.join(HEAD_KINDS)}")
    return name


@dataclass(frozen=True)
class HeadSpace:
    """The rows a head of ``kind`` trains and predicts on, for one pool.

    ``pool``: the pool's features in that space (the raw embeddings, or smoothed ones);
    ``scaler``: fitted on them; ``graph``: the kNN graph (``graph`` kind only).
    """

    kind: str
    pool: NDArray[Any]
    scaler: Scaler
    raw: NDArray[Any]
    graph: PoolGraph | None = None

    def rows_for(self, X: ArrayLike) -> NDArray[Any]:
        """Rows outside the pool (an eval set) in this space."""
        if self.graph is None:
            return np.asarray(X)
        return self.graph.smooth_new(X, self.raw, DEFAULT_SMOOTH)


def head_space(
    kind: str, X: NDArray[Any], *, scaler: Scaler | None = None, graph: PoolGraph | None = None
) -> HeadSpace:
    """The space heads of ``kind`` live in over pool ``X`` (builds the graph when needed)."""
    kind = check_head(kind)
    if kind != "graph":
        return HeadSpace(kind, X, scaler if scaler is not None else fit_scaler(X), X)
    graph = graph if graph is not None else build_graph(X, scaler=scaler)
    smoothed = graph.smooth_pool(X, DEFAULT_SMOOTH)
    return HeadSpace(kind, smoothed, fit_scaler(smoothed), X, graph)


def fit_head(
    space: HeadSpace,
    rows: Sequence[int] | NDArray[np.int64],
    labels: Sequence[Hashable],
    *,
    l2: float = 1.0,
    init: Head | None = None,
) -> Head:
    """The head of ``space.kind`` on pool ``rows`` with ``labels``, started from ``init``."""
    rows_arr = np.asarray(rows, dtype=np.int64)
    head = train_head(space.pool[rows_arr], labels, l2=l2, scaler=space.scaler, init=init)
    if space.kind != "selftrain" or len(head.classes) < 2:
        return head
    extra, extra_labels = pseudo_labels(head, space.pool, rows_arr)
    if not len(extra):
        return head
    all_rows = np.concatenate([rows_arr, extra])
    all_labels = np.concatenate([np.asarray(labels), extra_labels])
    return train_head(space.pool[all_rows], all_labels, l2=l2, scaler=space.scaler, init=head)


def pseudo_labels(
    head: Head,
    pool: NDArray[Any],
    labeled: NDArray[np.int64],
    *,
    threshold: float = SELFTRAIN_THRESHOLD,
    ratio: int = SELFTRAIN_RATIO,
) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Unlabeled rows ``head`` is sure of, and their predicted labels (see the module doc)."""
    probs = head.predict_proba(pool)
    confidence = probs.max(axis=1)
    predicted = probs.argmax(axis=1)
    confidence[labeled] = -1.0
    n_classes = len(head.classes)
    per_class = max(1, ratio * len(labeled) // n_classes)
    chosen = []
    for c in range(n_classes):
        members = np.flatnonzero((predicted == c) & (confidence >= threshold))
        order = np.argsort(-confidence[members], kind="stable")
        chosen.append(members[order[:per_class]])
    extra = np.sort(np.concatenate(chosen)).astype(np.int64)
    return extra, head.classes[predicted[extra]]
