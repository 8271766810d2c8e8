"""PSHEA: the forecaster, the controller rules, accounting, stop reasons, crash and resume."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alcli import strategies
from alcli.agent import (
    AutoConfig,
    EvalSet,
    Report,
    RoundSummary,
    choose_elimination,
    clamp_picks,
    forecast,
    load_state,
    rank_strategies,
    run_auto,
    saved_config,
    split_round,
)
from alcli.errors import OracleError, UsageError
from alcli.oracle import DirectoryOracle, PendingLabels, load_labels_csv

# --- synthetic pools -------------------------------------------------------------------------

Pool = tuple[list[str], np.ndarray, dict[str, str], EvalSet]


def blob_pool(
    n: int = 600, d: int = 8, n_classes: int = 4, spread: float = 2.2, seed: int = 0
) -> Pool:
    """Overlapping Gaussian blobs: accuracy grows with labels but is not trivially 1."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 3

    def draw(count: int, prefix: str) -> tuple[list[str], np.ndarray, list[str]]:
        y = rng.integers(0, n_classes, size=count)
        X = (centers[y] + rng.normal(size=(count, d)) * spread).astype(np.float32)
        return [f"s3://{prefix}/img-{i:05d}.png" for i in range(count)], X, [f"c{v}" for v in y]

    uris, X, y = draw(n, "pool")
    eval_uris, eval_X, eval_y = draw(300, "eval")
    return uris, X, dict(zip(uris, y, strict=True)), EvalSet(eval_uris, eval_X, eval_y)


class RecordingOracle:
    """Answers from a dict and remembers every URI it was asked (the test's witness)."""

    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth
        self.asked: list[str] = []
        self.calls = 0

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        self.calls += 1
        self.asked.extend(uris)
        return {uri: self.truth[uri] for uri in uris}


def comparable(report_dict: dict[str, Any]) -> dict[str, Any]:
    """A report without what legitimately differs between two runs (time, folder)."""
    return {
        k: v for k, v in report_dict.items() if k not in ("timings", "strategy_seconds", "out_dir")
    }


# Test-only strategies, registered through the public plugin decorator.


@strategies.register("test_lowest_index", family="tests", needs=(), cost="O(n)", reference="test")
def _lowest_index(ctx: Any) -> np.ndarray:
    """The unlabeled items with the lowest pool index."""
    return ctx.unlabeled[: ctx.budget]


@strategies.register(
    "test_lowest_index_too", family="tests", needs=(), cost="O(n)", reference="test"
)
def _lowest_index_too(ctx: Any) -> np.ndarray:
    """The same picks as test_lowest_index: every pick overlaps."""
    return ctx.unlabeled[: ctx.budget]


@strategies.register(
    "test_one_corner", family="tests", needs=("embeddings",), cost="O(n d)", reference="test"
)
def _one_corner(ctx: Any) -> np.ndarray:
    """A bad strategy: the unlabeled items nearest to pool item 0, near-duplicates of one class."""
    X = ctx.require_embeddings()
    distance = ((X[ctx.unlabeled] - X[0]) ** 2).sum(axis=1)
    return ctx.unlabeled[np.argsort(distance, kind="stable")[: ctx.budget]]


# --- the forecaster --------------------------------------------------------------------------


def test_forecast_recovers_a_clean_negative_exponential() -> None:
    n = np.arange(100, 900, 100, dtype=float)
    acc = 0.9 - 0.5 * np.exp(-0.004 * n)
    fc = forecast(n, acc, 1000, model="exp")
    assert fc.method == "curve"
    assert fc.alpha == pytest.approx(0.9, abs=1e-3)
    assert fc.beta == pytest.approx(0.5, abs=1e-2)
    assert fc.gamma == pytest.approx(0.004, rel=1e-2)
    assert fc.value == pytest.approx(0.9 - 0.5 * np.exp(-4.0), abs=1e-3)


def test_power_forecast_is_anchored_at_the_last_point_and_recovers_a_power_law() -> None:
    n = np.arange(100, 900, 100, dtype=float)
    acc = 0.95 - 0.3 * (n / 100) ** -0.7
    fc = forecast(n, acc, 1000)
    assert (fc.model, fc.method) == ("power", "curve")
    assert fc.value == pytest.approx(0.95 - 0.3 * 10**-0.7, abs=1e-4)
    # a last point off the curve moves the forecast by as much: the level is the last point's
    bumped = acc.copy()
    bumped[-1] += 0.01
    shifted = forecast(n, bumped, 1000)
    assert shifted.value - fc.value == pytest.approx(0.01, abs=3e-3)
    curve = shifted.curve(np.array([800.0]))
    assert curve is not None
    assert curve[0] == pytest.approx(bumped[-1], abs=1e-9)


def test_forecast_recovers_parameters_from_noisy_points() -> None:
    rng = np.random.default_rng(0)
    n = np.arange(50, 1050, 50, dtype=float)
    acc = 0.8 - 0.6 * np.exp(-0.006 * n) + rng.normal(size=n.size) * 0.005
    fc = forecast(n, acc, 1100, model="exp")
    assert fc.alpha == pytest.approx(0.8, abs=0.01)
    assert fc.beta == pytest.approx(0.6, abs=0.1)
    assert fc.gamma == pytest.approx(0.006, rel=0.2)


def test_forecast_fallbacks_for_one_and_two_points() -> None:
    one = forecast([100], [0.42], 200)
    assert (one.method, one.value) == ("last", 0.42)
    two = forecast([100, 200], [0.5, 0.6], 300)
    assert two.method == "linear"
    assert two.value == pytest.approx(0.7)
    assert forecast([100, 200], [0.9, 0.99], 400).value == 1.0  # capped
    assert forecast([100, 200], [0.3, 0.1], 400).value == 0.0  # floored
    # a repeated n keeps its last accuracy: two distinct points, linear
    assert forecast([100, 200, 200], [0.5, 0.55, 0.6], 300).value == pytest.approx(0.7)


@pytest.mark.parametrize(
    "acc",
    [
        [0.5, 0.5, 0.5, 0.5],  # flat
        [0.6, 0.5, 0.4, 0.3],  # falling
        [0.2, 0.9, 0.1, 0.8],  # noise
        [0.0, 0.0, 0.0, 1.0],  # a jump
        [1.0, 1.0, 1.0, 1.0],
    ],
)
def test_forecast_survives_awkward_histories(acc: list[float]) -> None:
    fc = forecast([10, 20, 30, 40], acc, 50)
    assert 0.0 <= fc.value <= 1.0
    assert fc.method in ("curve", "linear")


def test_forecast_of_flat_history_is_flat() -> None:
    assert forecast([10, 20, 30, 40], [0.5] * 4, 50).value == pytest.approx(0.5, abs=1e-5)


# --- controller rules ------------------------------------------------------------------------


def test_elimination_lowest_forecast_then_accuracy_then_name() -> None:
    assert choose_elimination({"a": 0.7, "b": 0.6, "c": 0.8}, dict.fromkeys("abc", 0.5)) == "b"
    # tie on forecast: the lower current accuracy goes
    assert choose_elimination({"a": 0.6, "b": 0.6}, {"a": 0.5, "b": 0.4}) == "b"
    assert choose_elimination({"a": 0.6, "b": 0.6 + 1e-12}, {"a": 0.4, "b": 0.5}) == "a"
    # tie on both: the name that sorts last goes
    assert choose_elimination({"a": 0.6, "b": 0.6, "c": 0.9}, dict.fromkeys("abc", 0.5)) == "b"


def test_rank_and_split_round() -> None:
    ranked = rank_strategies(
        ["a", "b", "c"], {"a": 0.5, "b": 0.7, "c": 0.7}, {"a": 0.1, "b": 0.2, "c": 0.3}
    )
    assert ranked == ["c", "b", "a"]
    assert rank_strategies(["x", "y"], {}, {}) == ["x", "y"]  # round 1: candidate order
    assert split_round(10, ["c", "b", "a"], "shared") == {"c": 4, "b": 3, "a": 3}
    assert split_round(10, ["c", "b", "a"], "paper") == {"c": 10, "b": 10, "a": 10}


def test_clamp_takes_new_picks_rank_by_rank_and_keeps_free_ones() -> None:
    picks = {"a": [1, 2, 3, 4], "b": [1, 5, 6, 7]}
    assert clamp_picks(picks, already_bought=set(), budget_left=10) == picks
    # new in rank order: 1, 2, 5, 3, 6, ... ; 3 fit
    assert clamp_picks(picks, already_bought=set(), budget_left=3) == {"a": [1, 2], "b": [1, 5]}
    # 4 was bought before: free, kept
    assert clamp_picks(picks, already_bought={4}, budget_left=1) == {"a": [1, 4], "b": [1]}
    assert clamp_picks(picks, already_bought=set(), budget_left=0) == {"a": [], "b": []}


# --- whole runs ------------------------------------------------------------------------------


def config(**overrides: Any) -> AutoConfig:
    base: dict[str, Any] = {
        "target_accuracy": 0.99,
        "budget": 200,
        "strategies": ("random", "margin", "test_one_corner"),
        "initial": 40,
        "round_size": 30,
        "seed": 7,
        "plateau_rounds": 50,
    }
    base.update(overrides)
    return AutoConfig(**base)


def run_pool(tmp_path: Path, pool: Pool, **overrides: Any) -> Report:
    """``run_auto`` over a ``blob_pool`` with a fresh oracle and ``config(**overrides)``."""
    uris, X, truth, eval_set = pool
    return run_auto(
        uris, X, RecordingOracle(truth), config(**overrides), out_dir=tmp_path, eval_set=eval_set
    )


def test_shared_run_writes_outputs_and_trains_on_every_label(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool()
    seen: list[RoundSummary] = []
    report = run_auto(
        uris,
        X,
        RecordingOracle(truth),
        config(),
        out_dir=tmp_path,
        eval_set=eval_set,
        progress=seen.append,
    )
    assert report.stop_reason == "budget"
    assert report.labels_bought == 200
    assert report.final_labels == 200  # shared: the final head uses every label bought
    labeled = load_labels_csv(tmp_path / "labeled.csv", normalize_uris=False)
    assert len(labeled) == 200
    assert all(truth[u] == label for u, label in labeled.items())
    assert [s.round for s in seen] == list(range(report.rounds + 1))
    assert seen[0].rows[0].labels == 40
    # each round spends at most R labels, never more
    bought = [s.labels_bought for s in seen]
    assert bought[0] == 40
    assert all(0 < b - a <= 30 for a, b in itertools.pairwise(bought))
    with open(tmp_path / "rounds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0].keys() == {
        "round",
        "strategy",
        "labels",
        "labels_bought_total",
        "accuracy",
        "forecast",
        "eliminated",
        "forecast_at",
    }
    assert len(rows) == len(report.rows)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["winner"] == report.winner
    assert saved["stop_reason"] == "budget"
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "head.npz").exists()
    # the heads a resume could start from: each survivor's and the shared one, no stale ones
    state = load_state(tmp_path)
    saved_heads = {path.stem for path in (tmp_path / "heads").glob("*.npz")}
    assert state.shared_head in saved_heads
    assert len(saved_heads) <= len(state.alive) + 1
    assert set(report.timings) >= {"heads", "forecasts", "selection", "overhead"}
    assert report.final_accuracy > report.rows[0].accuracy


@pytest.mark.parametrize("seed", [1, 2])
def test_the_strategy_that_learns_nothing_is_eliminated_first(tmp_path, seed) -> None:
    """Ten tight classes, eight initial labels: coverage matters, one corner teaches nothing."""
    report = run_pool(
        tmp_path,
        blob_pool(n_classes=10, spread=1.2, seed=seed),
        strategies=("random", "coreset", "test_one_corner"),
        initial=8,
        budget=200,
        target_accuracy=1.0,
        seed=seed,
        min_rounds=1,  # the evidence is overwhelming: its band is far below the others'
    )
    round1 = {r.strategy: r for r in report.rows if r.round == 1}
    assert round1["test_one_corner"].eliminated
    assert round1["test_one_corner"].forecast < min(
        round1["random"].forecast, round1["coreset"].forecast
    )
    assert report.winner != "test_one_corner"


def test_paper_mode_buys_per_strategy_and_reports_the_winners_set(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool()
    oracle = RecordingOracle(truth)
    report = run_auto(
        uris,
        X,
        oracle,
        config(budget=400, max_rounds=2, spend="paper"),
        out_dir=tmp_path,
        eval_set=eval_set,
    )
    assert report.stop_reason == "max_rounds"
    # round 1: three strategies x 30 picks (random and margin may overlap a little)
    round1 = [r for r in report.rows if r.round == 1]
    assert [r.labels for r in round1] == [70, 70, 70]
    assert 40 + 60 < round1[0].labels_bought_total <= 40 + 90
    assert len(oracle.asked) == len(set(oracle.asked)) == report.labels_bought
    labeled = load_labels_csv(tmp_path / "labeled.csv", normalize_uris=False)
    winner_rows = [r for r in report.rows if r.strategy == report.winner]
    assert len(labeled) == report.final_labels == winner_rows[-1].labels == 100


def test_overlapping_picks_are_bought_and_charged_once(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool()
    oracle = RecordingOracle(truth)
    cfg = config(
        strategies=("test_lowest_index", "test_lowest_index_too"),
        spend="paper",
        budget=100,
        round_size=20,
    )
    report = run_auto(uris, X, oracle, cfg, out_dir=tmp_path, eval_set=eval_set)
    assert len(oracle.asked) == len(set(oracle.asked))  # no URI asked twice
    round1 = [r for r in report.rows if r.round == 1]
    assert [r.labels for r in round1] == [60, 60]  # each strategy got its 20 picks...
    assert round1[0].labels_bought_total == 60  # ...but the 20 shared items were paid once
    assert report.labels_bought == len(oracle.asked) == 100
    assert report.stop_reason == "budget"


def test_budget_is_never_exceeded_and_the_last_round_is_clamped(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool()
    oracle = RecordingOracle(truth)
    report = run_auto(
        uris, X, oracle, config(budget=95, spend="paper"), out_dir=tmp_path, eval_set=eval_set
    )
    assert report.labels_bought == len(oracle.asked) == 95
    assert report.stop_reason == "budget"
    last = [r for r in report.rows if r.round == report.rounds]
    assert sum(r.labels - 40 for r in last) >= 55  # clamped picks spread over strategies
    assert max(r.labels for r in last) - min(r.labels for r in last) <= 1


def test_stop_on_target(tmp_path) -> None:
    report = run_pool(tmp_path, blob_pool(spread=0.8), target_accuracy=0.9)  # easy: high a_0
    assert report.stop_reason == "target"
    assert max(r.accuracy for r in report.rows if r.round == report.rounds) >= 0.9
    assert report.labels_bought < 200


def test_stop_on_plateau(tmp_path) -> None:
    report = run_pool(tmp_path, blob_pool(), budget=600, plateau_rounds=2, plateau_delta=0.5)
    assert report.stop_reason == "plateau"
    assert report.rounds == 2


def test_stop_when_the_pool_is_exhausted(tmp_path) -> None:
    report = run_pool(tmp_path, blob_pool(n=60), budget=1000, initial=20, round_size=30)
    assert report.stop_reason == "pool_exhausted"
    assert report.labels_bought == 60


def test_eval_fraction_buys_eval_labels_once_and_never_picks_them(tmp_path) -> None:
    uris, X, truth, _ = blob_pool()
    oracle = RecordingOracle(truth)
    report = run_auto(uris, X, oracle, config(eval_frac=0.25), out_dir=tmp_path)
    assert report.eval_labels == 150
    assert report.labels_bought == 200
    assert len(oracle.asked) == len(set(oracle.asked)) == 350
    eval_uris = set(load_labels_csv(tmp_path / "eval.csv", normalize_uris=False))
    labeled = set(load_labels_csv(tmp_path / "labeled.csv", normalize_uris=False))
    assert len(eval_uris) == 150
    assert not eval_uris & labeled


def test_eval_set_from_pool_items_is_held_out(tmp_path) -> None:
    uris, X, truth, _ = blob_pool()
    held = {u: truth[u] for u in uris[::4]}
    eval_set = EvalSet.from_pool(uris, X, held)
    report = run_auto(
        uris, X, RecordingOracle(truth), config(), out_dir=tmp_path, eval_set=eval_set
    )
    labeled = load_labels_csv(tmp_path / "labeled.csv", normalize_uris=False)
    assert report.eval_labels == 0
    assert not set(labeled) & set(held)


def test_runs_are_deterministic(tmp_path) -> None:
    """Committee (bald), probs + embeddings (badge) and random draws all replay exactly."""
    uris, X, truth, eval_set = blob_pool()
    cfg = config(strategies=("bald", "badge", "random"), budget=130)
    a = run_auto(uris, X, RecordingOracle(truth), cfg, out_dir=tmp_path / "a", eval_set=eval_set)
    b = run_auto(uris, X, RecordingOracle(truth), cfg, out_dir=tmp_path / "b", eval_set=eval_set)
    assert comparable(a.as_dict()) == comparable(b.as_dict())
    c = run_auto(
        uris,
        X,
        RecordingOracle(truth),
        config(strategies=cfg.strategies, seed=8),
        out_dir=tmp_path / "c",
        eval_set=eval_set,
    )
    assert comparable(c.as_dict()) != comparable(a.as_dict())


def test_out_dir_with_a_run_needs_resume_and_the_same_settings(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool()
    cfg = config(max_rounds=1)
    first = run_auto(uris, X, RecordingOracle(truth), cfg, out_dir=tmp_path, eval_set=eval_set)
    with pytest.raises(UsageError, match="already holds"):
        run_auto(uris, X, RecordingOracle(truth), cfg, out_dir=tmp_path, eval_set=eval_set)
    with pytest.raises(UsageError, match=r"different settings \(budget\)"):
        run_auto(
            uris,
            X,
            RecordingOracle(truth),
            config(max_rounds=1, budget=300),
            out_dir=tmp_path,
            eval_set=eval_set,
            resume=True,
        )
    with pytest.raises(UsageError, match="different pool"):
        run_auto(
            uris,
            X + 1,
            RecordingOracle(truth),
            cfg,
            out_dir=tmp_path,
            eval_set=eval_set,
            resume=True,
        )
    assert saved_config(tmp_path) == cfg.checked()
    # resuming a finished run asks nothing and reports the same
    oracle = RecordingOracle(truth)
    again = run_auto(
        uris, X, oracle, saved_config(tmp_path), out_dir=tmp_path, eval_set=eval_set, resume=True
    )
    assert oracle.asked == []
    assert comparable(again.as_dict()) == comparable(first.as_dict())
    with pytest.raises(UsageError, match="no alcli auto run"):
        saved_config(tmp_path / "empty")


def test_bad_settings_fail_before_anything_is_bought(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool(n=50)
    oracle = RecordingOracle(truth)
    with pytest.raises(UsageError, match="no evaluation set"):
        run_auto(uris, X, oracle, config(), out_dir=tmp_path / "a")
    with pytest.raises(UsageError, match="smaller than the initial"):
        run_auto(uris, X, oracle, config(budget=10), out_dir=tmp_path / "b", eval_set=eval_set)
    with pytest.raises(UsageError, match="fewer than the initial"):
        run_auto(uris, X, oracle, config(initial=45, eval_frac=0.2), out_dir=tmp_path / "c")
    with pytest.raises(UsageError, match="cannot be shared by 3"):
        run_auto(uris, X, oracle, config(round_size=2), out_dir=tmp_path / "d", eval_set=eval_set)
    assert oracle.asked == []
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_oracle_failure_keeps_what_was_bought(tmp_path) -> None:
    uris, X, truth, eval_set = blob_pool()

    class FailingSecondCall(RecordingOracle):
        def label(self, uris: Sequence[str]) -> dict[str, str]:
            if self.calls == 1:
                self.calls += 1
                raise OracleError("service down")
            return super().label(uris)

    oracle = FailingSecondCall(truth)
    with pytest.raises(OracleError, match="service down"):
        run_auto(uris, X, oracle, config(), out_dir=tmp_path, eval_set=eval_set)
    state = load_state(tmp_path)
    assert len(state.labels) == 40  # the initial set survived the failure
    report = run_auto(uris, X, oracle, config(), out_dir=tmp_path, eval_set=eval_set, resume=True)
    assert len(oracle.asked) == len(set(oracle.asked)) == report.labels_bought


def test_directory_oracle_round_trips_through_pending_labels(tmp_path) -> None:
    """A person labels batch files between resumes; the result equals a direct run."""
    uris, X, truth, eval_set = blob_pool()
    cfg = config(max_rounds=3)
    folder = tmp_path / "labeling"
    pauses = 0
    resume = False
    while True:
        try:
            report = run_auto(
                uris,
                X,
                DirectoryOracle(folder),
                cfg,
                out_dir=tmp_path / "run",
                eval_set=eval_set,
                resume=resume,
            )
            break
        except PendingLabels as pending:
            pauses += 1
            with open(pending.batch_path, newline="") as f:
                batch = [row["uri"] for row in csv.DictReader(f)]
            with open(pending.labels_path, "w", newline="") as f:
                f.write("uri,label\n" + "".join(f"{u},{truth[u]}\n" for u in batch))
            resume = True
    assert pauses == 4  # initial set + 3 rounds
    direct = run_auto(
        uris, X, RecordingOracle(truth), cfg, out_dir=tmp_path / "direct", eval_set=eval_set
    )
    assert comparable(report.as_dict()) == comparable(direct.as_dict())


# --- crash and resume in a real process --------------------------------------------------------

SCRIPT = """
import json, os, signal, sys
import numpy as np
from alcli.agent import AutoConfig, run_auto
from alcli.oracle import CommandOracle

def die_at(phase):
    # the phase named in ALCLI_TEST_CRASH_AT: die there like kill -9
    if phase == os.environ.get("ALCLI_TEST_CRASH_AT"):
        os.kill(os.getpid(), signal.SIGKILL)

out_dir, labels_csv, log = sys.argv[1:4]
rng = np.random.default_rng(0)
centers = rng.normal(size=(4, 8)) * 3
y = rng.integers(0, 4, size=500)
X = (centers[y] + rng.normal(size=(500, 8)) * 2.2).astype(np.float32)
uris = [f"s3://pool/img-{i:05d}.png" for i in range(500)]
with open(labels_csv, "w") as f:
    f.write("uri,label\\n" + "".join(f"{u},c{v}\\n" for u, v in zip(uris, y)))
oracle_code = (
    "import sys\\n"
    "labels = dict(l.strip().split(',') for l in open(sys.argv[1]).readlines()[1:])\\n"
    "asked = [l.strip() for l in sys.stdin if l.strip()]\\n"
    "open(sys.argv[2], 'a').write(''.join(u + '\\\\n' for u in asked))\\n"
    "print(''.join(u + ',' + labels[u] + '\\\\n' for u in asked), end='')\\n"
)
oracle = CommandOracle([sys.executable, "-c", oracle_code, labels_csv, log], timeout_s=60)
config = AutoConfig(
    target_accuracy=0.99, budget=160, strategies=("random", "margin", "kcenter"),
    initial=40, round_size=30, seed=3, eval_frac=0.2, plateau_rounds=50,
)
report = run_auto(
    uris, X, oracle, config, out_dir=out_dir, resume=len(sys.argv) > 4, on_phase=die_at
)
skip = ("timings", "strategy_seconds", "out_dir")
print(json.dumps({k: v for k, v in report.as_dict().items() if k not in skip}))
"""

CRASH_POINTS = [
    "eval:after_oracle",
    "initial:after_oracle",
    "initial:after_round",
    "round1:after_select",
    "round1:after_oracle",
    "round1:after_train",
    "round1:after_round",
    "round3:after_oracle",
    "final:before_outputs",
]


def run_script(tmp_path: Path, name: str, *, crash_at: str | None = None, resume: bool = False):
    script = tmp_path / "auto.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if k != "ALCLI_TEST_CRASH_AT"}
    if crash_at:
        env["ALCLI_TEST_CRASH_AT"] = crash_at
    argv = [
        sys.executable,
        str(script),
        str(tmp_path / name),
        str(tmp_path / "labels.csv"),
        str(tmp_path / f"{name}.log"),
    ]
    if resume:
        argv.append("--resume")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("baseline")
    done = run_script(tmp, "base")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_kill_at_any_phase_then_resume_gives_the_same_report(
    tmp_path, uninterrupted, crash_at
) -> None:
    crashed = run_script(tmp_path, "run", crash_at=crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert (tmp_path / "run" / "state.json").exists()
    resumed = run_script(tmp_path, "run", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == uninterrupted
    asked = (tmp_path / "run.log").read_text().split()
    assert len(asked) == len(set(asked)), "a label was bought twice"
    assert len(asked) == uninterrupted["labels_bought"] + uninterrupted["eval_labels"]


def test_kill_after_buying_then_resume_asks_nothing_twice(tmp_path, uninterrupted) -> None:
    """The fast representative of the crash matrix above."""
    crashed = run_script(tmp_path, "run", crash_at="round1:after_oracle")
    assert crashed.returncode == -signal.SIGKILL
    resumed = run_script(tmp_path, "run", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == uninterrupted
    asked = (tmp_path / "run.log").read_text().split()
    assert len(asked) == len(set(asked))


@pytest.mark.slow
@pytest.mark.parametrize("spend", ["shared", "paper"])
def test_end_to_end_paper_setting_seven_strategies(tmp_path, spend) -> None:
    """The paper's race (7 strategies, 8 rounds) with the real zoo on a 4,000 x 64 pool."""
    uris, X, truth, eval_set = blob_pool(n=4000, d=64, n_classes=10, spread=6.0, seed=5)
    names = ("least_confidence", "margin", "ratio", "entropy", "coreset", "dbal", "bald")
    oracle = RecordingOracle(truth)
    cfg = AutoConfig(
        target_accuracy=1.0,
        budget=5000,
        strategies=names,
        initial=50,
        round_size=70,
        spend=spend,
        max_rounds=8,
        plateau_rounds=9,
        elimination="every_round",  # Algorithm 1 as written: one goes every round
    )
    report = run_auto(uris, X, oracle, cfg, out_dir=tmp_path, eval_set=eval_set)
    assert report.stop_reason == "max_rounds"
    assert report.rounds == 8
    alive_at_end = {r.strategy for r in report.rows if r.round == 8}
    assert alive_at_end == {report.winner}  # one eliminated per round from round 1 to 6
    assert len(oracle.asked) == len(set(oracle.asked)) == report.labels_bought
    if spend == "shared":
        assert report.labels_bought <= 50 + 8 * 70
        assert report.final_labels == report.labels_bought
    else:
        assert report.labels_bought > 50 + 8 * 70  # the paper's race costs more
    assert report.final_accuracy > report.rows[0].accuracy + 0.05
