"""``pooled`` spend: a candidate whose picks make the shared head worse is eliminated on the
leave-out evidence (``rules.eliminate_low_yield``), and the winner is the best paired standing
(``rules.choose_pooled_winner``), never a strategy that loses on the evidence."""

from __future__ import annotations

from typing import Any

import numpy as np

from alcli import strategies
from alcli.agent import AutoConfig, EvalSet, load_state, run_auto
from alcli.agent.outputs import RoundRow
from alcli.agent.rules import (
    choose_pooled_winner,
    eliminate_low_yield,
    leave_out_contribution,
    yield_gaps,
)

N_DECOYS = 60


@strategies.register("test_decoys", family="tests", needs=(), cost="O(n)", reference="test")
def _decoys(ctx: Any) -> np.ndarray:
    """A harmful strategy: the unlabeled items with the highest pool index, the decoys first."""
    return ctx.unlabeled[::-1][: ctx.budget]


def decoy_pool(seed: int = 0) -> tuple[list[str], np.ndarray, dict[str, str], EvalSet]:
    """Four blobs, and at the pool's end ``N_DECOYS`` items at class c0's centre whose true
    label is c1 (atypical items a real pool has: each is labeled right, and together they
    pull the head's c0 region to c1). The eval set is clean blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)) * 3

    def draw(count: int) -> tuple[np.ndarray, list[str]]:
        y = rng.integers(0, 4, size=count)
        X = (centers[y] + rng.normal(size=(count, 8)) * 1.5).astype(np.float32)
        return X, [f"c{v}" for v in y]

    X, y = draw(440)
    decoys = (centers[0] + rng.normal(size=(N_DECOYS, 8)) * 0.5).astype(np.float32)
    X = np.concatenate([X, decoys])
    y = y + ["c1"] * N_DECOYS
    eval_X, eval_y = draw(300)
    uris = [f"s3://pool/{i:04d}.png" for i in range(len(y))]
    eval_set = EvalSet([f"s3://eval/{i}.png" for i in range(300)], eval_X, eval_y)
    return uris, X, dict(zip(uris, y, strict=True)), eval_set


def decoy_config(**overrides: Any) -> AutoConfig:
    """``pooled`` racing margin, random and the decoys on ``decoy_pool``, up to round 6."""
    settings: dict[str, Any] = {
        "target_accuracy": 1.0,
        "budget": 220,
        "strategies": ("margin", "random", "test_decoys"),
        "initial": 40,
        "round_size": 30,
        "plateau_rounds": 50,
        "seed": 3,
    }
    return AutoConfig(**{**settings, **overrides})


class Oracle:
    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def label(self, uris: list[str]) -> dict[str, str]:
        return {u: self.truth[u] for u in uris}


def test_a_candidate_whose_picks_harm_the_shared_head_is_eliminated_and_never_wins(
    tmp_path,
) -> None:
    uris, X, truth, eval_set = decoy_pool()
    config = decoy_config()
    report = run_auto(uris, X, Oracle(truth), config, out_dir=tmp_path, eval_set=eval_set)
    gone = {row.strategy: row.round for row in report.rows if row.eliminated}
    assert gone == {"test_decoys": 3}, gone  # the first round the rule reads, and no other
    assert report.winner != "test_decoys"
    state = load_state(tmp_path)
    # its cost, measured and reported: the shared head is worse with its picks than without
    delta, se, picks = state.shared[3].leave_out["test_decoys"]
    assert delta + 2.5 * se < 0
    others = {r for name, rows in state.picked.items() if name != "test_decoys" for r in rows}
    assert picks == len(set(state.picked["test_decoys"]) - others) > 0  # its own rows only
    assert all(d > 0 for s, (d, _, _) in state.shared[3].leave_out.items() if s != "test_decoys")
    assert report.round_notes[2]["leave_out_pt"]["test_decoys"][0] < 0
    # every bought label's buyer is recorded; the decoy strategy bought decoys only
    assert all(r >= len(uris) - N_DECOYS for r in state.picked["test_decoys"])
    assert len(state.picked["test_decoys"]) == 30  # 10 a round for 3 rounds, then gone


def test_leave_out_contribution_is_the_paired_difference_and_its_error() -> None:
    with_rows = np.array([True] * 90 + [False] * 10)
    without = np.array([True] * 80 + [False] * 15 + [True] * 5)
    delta, se = leave_out_contribution(with_rows, without)
    diff = with_rows.astype(float) - without.astype(float)
    assert delta == np.mean(diff) == 0.05
    assert np.isclose(se, diff.std() / np.sqrt(100))
    assert leave_out_contribution(with_rows, with_rows) == (0.0, 0.0)


def test_low_yield_rule_compares_each_with_the_others_per_label_and_waits() -> None:
    # (delta, se, picks): b's 40 picks add nothing while the others' add ~0.04 point a label
    contributions = {
        "a": (0.010, 0.001, 25),
        "b": (0.000, 0.001, 40),
        "c": (0.012, 0.001, 30),
        "d": (0.009, 0.001, 20),
    }
    gap, se = yield_gaps(contributions)["b"]
    rates = np.array([0.010 / 25, 0.012 / 30, 0.009 / 20])
    assert np.isclose(gap, -40 * rates.mean())
    assert np.isclose(se, np.hypot(0.001, 40 * rates.std(ddof=1) / np.sqrt(3)))
    assert eliminate_low_yield(contributions, rnd=2, min_rounds=2) is None  # too early
    assert eliminate_low_yield(contributions, rnd=3, min_rounds=2) == "b"
    assert eliminate_low_yield(contributions, rnd=3, min_rounds=4) is None
    # the paired evidence puts b above the mean: the two views disagree, b stays
    standing = {"a": (-1.0, 3), "b": (0.5, 3), "c": (0.2, 3), "d": (0.3, 3)}
    assert eliminate_low_yield(contributions, rnd=3, min_rounds=2, standing=standing) is None
    # within the noise (a wide eval error): nobody goes
    noisy = {k: (d, 0.01, n) for k, (d, _, n) in contributions.items()}
    assert eliminate_low_yield(noisy, rnd=5, min_rounds=2) is None
    assert eliminate_low_yield(dict(list(contributions.items())[:2]), rnd=5, min_rounds=2) is None


def test_pooled_winner_is_the_best_paired_standing_not_the_last_rounds_leader() -> None:
    rows = [RoundRow(0, s, 100, 100, 0.7, None, False) for s in "abc"]
    accs = [
        {"a": 0.80, "b": 0.78, "c": 0.76},
        {"a": 0.85, "b": 0.84, "c": 0.83},
        {"a": 0.88, "b": 0.87, "c": 0.89},  # c leads the last round only
    ]
    for rnd, by_name in enumerate(accs, start=1):
        rows += [RoundRow(rnd, s, 100, 100, acc, None, False) for s, acc in by_name.items()]
    current = accs[-1]
    assert choose_pooled_winner(rows, current) == "a"
    # ties on standing: the current accuracy decides, then the name
    flat = [RoundRow(1, s, 100, 100, 0.8, None, False) for s in "ab"]
    assert choose_pooled_winner(flat, {"a": 0.8, "b": 0.81}) == "b"
    assert choose_pooled_winner(flat, {"a": 0.8, "b": 0.8}) == "a"


def test_under_a_self_training_head_the_leave_out_reads_its_labeled_step(tmp_path) -> None:
    """With ``--head selftrain`` the leave-out compares labeled steps (as the evidence heads
    do): the decoys still cost the head, so they still go, and never win."""
    uris, X, truth, eval_set = decoy_pool()
    config = decoy_config(head="selftrain")
    report = run_auto(uris, X, Oracle(truth), config, out_dir=tmp_path, eval_set=eval_set)
    assert report.winner != "test_decoys"
    state = load_state(tmp_path)
    assert "test_decoys" in state.shared[3].leave_out
    assert "test_decoys" in {row.strategy for row in report.rows if row.eliminated}
