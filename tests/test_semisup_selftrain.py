"""Self-training's parts (session 10): row weights in the head's fit, class-balanced
pseudo-labels, label spreading over the kNN graph, and ``graph_selftrain`` using them."""

from __future__ import annotations

import numpy as np
import pytest

from alcli.errors import UsageError
from alcli.learner import HEAD_KINDS, fit_head, head_space, semisup, train_head
from alcli.learner.semisup import label_spreading, pseudo_labels


def clusters(n: int, d: int = 12, n_classes: int = 4, seed: int = 0, skew: bool = False):
    """Elongated, non-negative class clusters (like a CNN's pooled ReLU outputs); ``skew``
    makes class 0 four times as frequent as each other class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 3
    direction = rng.normal(size=(n_classes, d))
    weights = np.array([4.0] + [1.0] * (n_classes - 1)) if skew else np.ones(n_classes)
    y = rng.choice(n_classes, size=n, p=weights / weights.sum())
    t = rng.uniform(-3, 3, size=n)
    X = centers[y] + t[:, None] * direction[y] + rng.normal(size=(n, d)) * 0.6
    return np.abs(X).astype(np.float32), y


def test_integer_row_weights_equal_repeated_rows() -> None:
    X, y = clusters(200, seed=1)
    rows = np.arange(40)
    weight = np.where(np.arange(40) < 10, 3.0, 1.0)
    repeated = np.concatenate([rows, np.repeat(rows[:10], 2)])
    space = head_space("logistic", X)
    weighted = train_head(X[rows], y[rows], scaler=space.scaler, sample_weight=weight)
    copies = train_head(X[repeated], y[repeated], scaler=space.scaler)
    np.testing.assert_allclose(
        weighted.predict_proba(X), copies.predict_proba(X), atol=2e-3
    )  # the same objective; L-BFGS stops within its tolerance of the same optimum
    ones = train_head(X[rows], y[rows], scaler=space.scaler, sample_weight=np.ones(40))
    plain = train_head(X[rows], y[rows], scaler=space.scaler)
    np.testing.assert_allclose(ones.weights, plain.weights, atol=1e-5)
    for bad in (np.ones(39), np.r_[np.ones(39), 0.0]):
        with pytest.raises(UsageError, match="sample_weight"):
            train_head(X[rows], y[rows], scaler=space.scaler, sample_weight=bad)


def test_prior_balanced_pseudo_labels_follow_the_heads_class_prior() -> None:
    X, y = clusters(1500, seed=2, skew=True)
    space = head_space("graph", X)
    rows = np.arange(30)
    head = fit_head(space, rows, y[rows])
    free, _ = pseudo_labels(head, space.pool, rows, threshold=0.9, ratio=None)
    extra, labels = pseudo_labels(
        head, space.pool, rows, threshold=0.9, ratio=None, balance="prior"
    )
    assert len(free) - len(head.classes) <= len(extra) <= len(free)  # quotas round down
    assert not set(extra) & set(rows.tolist())
    probs = head.predict_proba(space.pool)
    unlabeled = np.ones(len(X), dtype=bool)
    unlabeled[rows] = False
    prior = probs[unlabeled].mean(axis=0)
    counts = np.array([(labels == c).sum() for c in head.classes])
    np.testing.assert_allclose(counts / len(extra), prior / prior.sum(), atol=0.01)
    # each class keeps its most confident rows
    for c in head.classes:
        mine = extra[labels == c]
        others = np.setdiff1d(np.flatnonzero(probs.argmax(axis=1) == c), np.r_[mine, rows])
        if len(mine) and len(others):
            assert probs[mine].max(axis=1).min() >= probs[others].max(axis=1).max()
    again = pseudo_labels(head, space.pool, rows, threshold=0.9, ratio=None, balance="prior")
    np.testing.assert_array_equal(again[0], extra)


def test_label_spreading_labels_the_pool_from_a_few_rows() -> None:
    X, y = clusters(1200, seed=3)
    space = head_space("graph", X)
    assert space.graph is not None
    rows = np.flatnonzero(np.arange(1200) % 100 == 0)
    spread = label_spreading(space.graph, rows, y[rows], np.unique(y))
    assert spread.shape == (1200,)
    assert (spread == y).mean() > 0.9
    np.testing.assert_array_equal(spread, label_spreading(space.graph, rows, y[rows], np.unique(y)))


@pytest.mark.parametrize(
    "settings", [{"weight": "balanced"}, {"balance": "prior"}, {"agree": True}]
)
def test_graph_selftrain_variants_are_deterministic_and_change_the_head(
    settings, monkeypatch
) -> None:
    X, y = clusters(800, seed=4, skew=True)
    space = head_space("graph_selftrain", X)
    rows = np.arange(24)
    shipped = fit_head(space, rows, y[rows])
    monkeypatch.setitem(
        semisup.SELFTRAIN, "graph_selftrain", {**semisup.SELFTRAIN["graph_selftrain"], **settings}
    )
    a = fit_head(space, rows, y[rows])
    b = fit_head(space, rows, y[rows])
    np.testing.assert_array_equal(a.weights, b.weights)
    if "agree" not in settings:  # here label spreading agrees with every pseudo-label
        assert not np.array_equal(a.weights, shipped.weights)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_head_kind_keeps_the_head_contract(kind) -> None:
    """Any kind: a deterministic ``Head`` over the pool's classes, probabilities that sum to 1
    on pool rows and on new rows mapped by ``rows_for``."""
    X, y = clusters(500, seed=5)
    space = head_space(kind, X)
    rows = np.arange(20)
    head = fit_head(space, rows, y[rows])
    again = fit_head(space, rows, y[rows])
    np.testing.assert_array_equal(head.weights, again.weights)
    assert head.classes.tolist() == sorted(set(y[rows].tolist()))
    for probs in (head.predict_proba(space.pool), head.predict_proba(space.rows_for(X[:9]))):
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    one = fit_head(space, rows[:3], np.zeros(3, dtype=int))  # one class seen: no crash
    assert one.classes.tolist() == [0]
