"""``run_auto(graph=)``: a graph head reads the caller's kNN graph instead of building its own."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from alcli.agent import AutoConfig, EvalSet, run_auto
from alcli.errors import UsageError
from alcli.learner import build_graph


class _Oracle:
    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def label(self, asked: Sequence[str]) -> dict[str, str]:
        return {u: self.truth[u] for u in asked}


def _pool() -> tuple[list[str], np.ndarray, dict[str, str], EvalSet]:
    rng = np.random.default_rng(5)
    y = np.arange(460) % 4
    X = ((rng.normal(size=(4, 12)) * 0.8)[y] + rng.normal(size=(460, 12))).astype(np.float32)
    uris = [f"item{i}" for i in range(360)]
    truth = {u: str(y[i]) for i, u in enumerate(uris)}
    eval_set = EvalSet([f"eval{i}" for i in range(100)], X[360:], [str(v) for v in y[360:]])
    return uris, X[:360], truth, eval_set


CONFIG = AutoConfig(
    target_accuracy=1.0,
    budget=60,
    strategies=("margin", "random"),
    initial=20,
    round_size=20,
    head="graph_selftrain",
    plateau_rounds=10,
)


def test_a_given_graph_gives_the_run_a_built_one_gives(tmp_path) -> None:
    uris, X, truth, eval_set = _pool()
    own = run_auto(uris, X, _Oracle(truth), CONFIG, out_dir=tmp_path / "own", eval_set=eval_set)
    graph = build_graph(X)  # exact, on the pool's own scaler: what run_auto builds
    given = run_auto(
        uris, X, _Oracle(truth), CONFIG, out_dir=tmp_path / "given", eval_set=eval_set, graph=graph
    )
    assert [r.accuracy for r in given.rows] == [r.accuracy for r in own.rows]
    assert given.labels_bought == own.labels_bought == 60
    # a graph with only its neighbours (the search is what costs): another graph, other rows
    other = build_graph(X, k=3)
    third = run_auto(
        uris, X, _Oracle(truth), CONFIG, out_dir=tmp_path / "k3", eval_set=eval_set, graph=other
    )
    assert [r.accuracy for r in third.rows] != [r.accuracy for r in own.rows]


def test_a_graph_of_another_pool_is_a_usage_error(tmp_path) -> None:
    uris, X, truth, eval_set = _pool()
    with pytest.raises(UsageError, match="the graph has 100 rows"):
        run_auto(
            uris,
            X,
            _Oracle(truth),
            CONFIG,
            out_dir=tmp_path,
            eval_set=eval_set,
            graph=build_graph(X[:100]),
        )


def test_an_evidence_probe_of_a_self_training_head_is_its_labeled_step(tmp_path) -> None:
    """``labeled_only``: the labeled rows in the head's space, no pseudo-labels; named apart
    from the self-trained head on the same rows, and ignored by a head that does not self-train."""
    from contextlib import nullcontext

    from alcli.agent.heads import HeadStore, head_key
    from alcli.learner import fit_head, head_space, train_head

    _, X, truth, _ = _pool()
    labels = list(truth.values())[:40]
    rows = list(range(40))
    space = head_space("graph_selftrain", X)
    store = HeadStore(tmp_path, space, l2=1.0, timed=lambda part: nullcontext())
    probe = store.train(rows, labels, labeled_only=True)
    step = train_head(space.pool[rows], labels, scaler=space.scaler)
    np.testing.assert_array_equal(probe.weights, step.weights)
    full = store.train(rows, labels)
    np.testing.assert_array_equal(full.weights, fit_head(space, rows, labels).weights)
    assert not np.array_equal(full.weights, probe.weights)  # the refit read the pool
    assert head_key(rows, labeled_only=True) != head_key(rows)
    untimed = store.timed
    plain = HeadStore(tmp_path / "plain", head_space("logistic", X), l2=1.0, timed=untimed)
    assert plain.train(rows, labels, labeled_only=True) is plain.train(rows, labels)


def test_a_self_trained_head_keeps_its_labeled_step_for_the_next_evidence_base(tmp_path) -> None:
    """The shared head's first step is the next round's evidence base (the same rows): it is
    saved with the head and read back, not fitted twice, and a saved one is never replaced."""
    from contextlib import contextmanager

    from alcli.agent.heads import HeadStore, head_key
    from alcli.learner import head_space, train_head

    _, X, truth, _ = _pool()
    labels = list(truth.values())[:40]
    rows = list(range(40))
    space = head_space("graph_selftrain", X)
    fits: list[str] = []

    @contextmanager
    def timed(part: str):  # type: ignore[no-untyped-def]
        fits.append(part)
        yield

    store = HeadStore(tmp_path, space, l2=1.0, timed=timed)
    full = store.train(rows, labels)
    assert (tmp_path / "heads" / f"{head_key(rows, labeled_only=True)}.npz").exists()
    before = list(fits)
    probe = store.train(rows, labels, labeled_only=True, part="evidence")
    assert "evidence" not in fits[len(before) :]  # found, not fitted
    step = train_head(space.pool[rows], labels, scaler=space.scaler)
    np.testing.assert_array_equal(probe.weights, step.weights)
    assert not np.array_equal(probe.weights, full.weights)
    # a fresh store (a resumed run) reads the same step from disk
    again = HeadStore(tmp_path, space, l2=1.0, timed=timed)
    np.testing.assert_array_equal(
        again.train(rows, labels, labeled_only=True).weights, step.weights
    )
