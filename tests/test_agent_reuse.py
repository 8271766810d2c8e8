"""The agent never fits the same head twice nor predicts the pool twice under one head."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agent_pools import blobs as pool_blobs
from alcli.agent import AutoConfig, EvalSet, run_auto
from alcli.learner import Head, fit_scaler, semisup, train_head
from alcli.oracle import load_labels_csv

N_POOL = 500


def blobs(seed: int = 0) -> tuple[list[str], np.ndarray, dict[str, str], EvalSet]:
    return pool_blobs(N_POOL, seed)


def race(**overrides: Any) -> AutoConfig:
    """These tests' settings: 40 initial labels, rounds of 30, no plateau stop."""
    base: dict[str, Any] = {
        "target_accuracy": 0.99,
        "initial": 40,
        "round_size": 30,
        "plateau_rounds": 50,
    }
    return AutoConfig(**{**base, **overrides})


class DictOracle:
    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def label(self, uris: list[str]) -> dict[str, str]:
        return {u: self.truth[u] for u in uris}


@pytest.mark.parametrize("spend", ["shared", "paper"])
def test_the_final_head_is_the_last_fit_not_a_second_one(tmp_path, monkeypatch, spend) -> None:
    uris, X, truth, eval_set = blobs()
    fits: list[int] = []

    def counting_train_head(Xs: Any, y: Any, **kwargs: Any) -> Head:
        fits.append(len(y))
        return train_head(Xs, y, **kwargs)

    monkeypatch.setattr(semisup, "train_head", counting_train_head)
    cfg = race(budget=160, strategies=("margin", "entropy"), spend=spend)
    report = run_auto(uris, X, DictOracle(truth), cfg, out_dir=tmp_path, eval_set=eval_set)
    assert report.stop_reason == "budget"
    # shared: the last round's head on every label is the final head; paper: the winner's
    assert fits.count(report.final_labels) == 1
    bought = load_labels_csv(tmp_path / "labeled.csv", normalize_uris=False)
    labeled = sorted(uris.index(u) for u in bought)
    assert len(labeled) == report.final_labels
    assert report.final_head is not None
    if spend == "shared":
        rows = np.array(labeled)
        # Warm-started from the last round's shared head, it is the same convex optimum as a
        # cold fit up to L-BFGS's tolerance: same predictions on (nearly) every pool row.
        cold = train_head(X[rows], [truth[uris[r]] for r in rows], scaler=fit_scaler(X))
        agree = np.mean(report.final_head.predict(X) == cold.predict(X))
        assert agree >= 0.99
        assert report.final_head.n_iter < cold.n_iter


@pytest.mark.parametrize("spend", ["shared", "pooled"])
def test_survivors_sharing_a_head_share_one_pool_prediction(tmp_path, monkeypatch, spend) -> None:
    uris, X, truth, eval_set = blobs(seed=1)
    pool_predictions: list[int] = []
    real = Head.predict_proba

    def counting_predict(self: Head, X_: Any, **kwargs: Any) -> Any:
        if len(X_) == N_POOL:
            pool_predictions.append(id(self))
        return real(self, X_, **kwargs)

    monkeypatch.setattr(Head, "predict_proba", counting_predict)
    cfg = race(
        budget=400,
        strategies=("margin", "entropy", "least_confidence"),
        max_rounds=2,
        elimination="every_round",
        spend=spend,
    )
    report = run_auto(uris, X, DictOracle(truth), cfg, out_dir=tmp_path, eval_set=eval_set)
    assert report.rounds == 2
    if spend == "shared":
        # round 1: one head (the initial one) for all three; round 2: two survivors, two heads
        assert len(pool_predictions) == 1 + 2
        assert len(set(pool_predictions[1:])) == 2
    else:
        # pooled: every survivor picks with the head on every label bought, one per round
        assert len(pool_predictions) == 1 + 1
        assert len(set(pool_predictions)) == 2


def test_a_saved_head_of_another_width_is_trained_again(tmp_path) -> None:
    """A resumed run whose head space changed width (the graph head's [x, mean] form) warns
    and trains the head again instead of failing on a matrix product."""
    from contextlib import nullcontext

    from alcli.agent.heads import HeadStore, rows_key, save_head

    rng = np.random.default_rng(0)
    X = rng.random((60, 6), dtype=np.float32)
    labels = ["a" if x[0] > 0.5 else "b" for x in X]
    space = semisup.head_space("logistic", X)
    store = HeadStore(tmp_path, space, l2=1.0, timed=lambda part: nullcontext())
    rows = list(range(20))
    narrow = train_head(X[:20, :4], labels[:20])  # a head over 4 features, not 6
    store.folder.mkdir(parents=True)
    save_head(narrow, store.folder / f"{rows_key(rows)}.npz")

    with pytest.warns(UserWarning, match="reads 4 features, this run's head space has 6"):
        head = store.train(rows, labels[:20])
    assert head.weights.shape[0] == 6
    assert head.predict_proba(X).shape == (60, 2)
