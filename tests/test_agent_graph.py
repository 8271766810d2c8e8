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
