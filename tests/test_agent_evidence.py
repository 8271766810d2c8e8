"""Eliminations on evidence: confidence bands from the run's own forecast errors."""

from __future__ import annotations

from alcli.agent.outputs import RoundRow
from alcli.agent.rules import (
    MIN_BAND,
    PRIOR_BAND,
    eliminate_on_evidence,
    forecast_band,
)


def row(rnd: int, name: str, acc: float, fc: float | None) -> RoundRow:
    return RoundRow(rnd, name, 100 + 10 * rnd, 100, acc, fc, False, 110 + 10 * rnd)


def test_band_is_the_prior_until_enough_errors_then_the_mean_error() -> None:
    rows = [row(0, "a", 0.8, None), row(1, "a", 0.82, 0.84)]
    assert forecast_band(rows) == PRIOR_BAND
    rows += [row(2, "a", 0.86, 0.85), row(3, "a", 0.87, 0.88), row(4, "a", 0.90, 0.88)]
    # forecasts 0.84 -> 0.86 (0.02), 0.85 -> 0.87 (0.02), 0.88 -> 0.90 (0.02)
    assert abs(forecast_band(rows) - 0.02) < 1e-9
    exact = [row(r, "b", 0.8 + r / 100, 0.8 + (r + 1) / 100) for r in range(6)]
    assert forecast_band(exact) == MIN_BAND


def test_no_elimination_before_min_rounds_or_within_the_bands() -> None:
    forecasts = {"a": 0.90, "b": 0.85, "c": 0.895}
    acc = dict.fromkeys("abc", 0.8)
    assert eliminate_on_evidence(forecasts, acc, band=0.01, rnd=1, min_rounds=2) is None
    assert eliminate_on_evidence(forecasts, acc, band=0.01, rnd=2, min_rounds=2) == "b"
    # 0.85 + 0.03 >= 0.90 - 0.03: the bands overlap, so b races on
    assert eliminate_on_evidence(forecasts, acc, band=0.03, rnd=5, min_rounds=2) is None
    assert eliminate_on_evidence({"a": 0.9}, {"a": 0.9}, band=0.0, rnd=9, min_rounds=1) is None


def test_auto_with_the_graph_head_reports_what_it_bought_per_round(tmp_path) -> None:
    import numpy as np

    from alcli.agent import AutoConfig, EvalSet, run_auto

    rng = np.random.default_rng(4)
    y = np.arange(500) % 4
    X = ((rng.normal(size=(4, 16)) * 0.8)[y] + rng.normal(size=(500, 16))).astype(np.float32)
    uris = [f"item{i}" for i in range(400)]
    truth = {u: str(y[i]) for i, u in enumerate(uris)}

    class Oracle:
        def label(self, asked: list[str]) -> dict[str, str]:
            return {u: truth[u] for u in asked}

    eval_set = EvalSet([f"eval{i}" for i in range(100)], X[400:], [str(v) for v in y[400:]])
    config = AutoConfig(
        target_accuracy=1.0,
        budget=100,
        strategies=("margin", "bald"),
        initial=20,
        round_size=20,
        head="graph",
        plateau_rounds=10,  # the graph head levels off early on 4 blobs: run to the budget
    )
    report = run_auto(uris, X[:400], Oracle(), config, out_dir=tmp_path, eval_set=eval_set)
    assert report.config["head"] == "graph"
    assert report.labels_bought == 100
    last = report.shared_accuracy[-1]
    assert sum(last["bought_by_class"].values()) == report.labels_bought
    assert set(last["per_class"]) == {"0", "1", "2", "3"}
    assert 0 <= last["ece"] <= 1
    assert last["leader"] in {"margin", "bald"}
    assert "graph" in report.timings
    # the per-round notes (report.json and the human report) say the same, round by round
    notes = report.round_notes
    assert [n["round"] for n in notes] == list(range(1, report.rounds + 1))
    assert all(n["head"] == "graph" and n["leader"] in {"margin", "bald"} for n in notes)
    assert notes[-1]["bought_by_class"] == last["bought_by_class"]
    assert sum(sum(n["bought_this_round_by_class"].values()) for n in notes) == 100 - 20
    assert notes[0]["forecasts"] == {}
    assert notes[0]["forecast_mae_pt"] is None
    for n in notes[1:]:
        for name, fc in n["forecasts"].items():
            acc = next(
                r.accuracy for r in report.rows if (r.round, r.strategy) == (n["round"], name)
            )
            assert abs(n["forecast_errors_pt"][name] - abs(fc - acc) * 100) < 1e-2
    assert set(notes[-1]["paired_standing"]) <= {"margin", "bald"}
    from rich.console import Console

    from alcli.autorun import render_report

    console = Console(record=True, width=200)
    render_report(report, console)
    text = console.export_text()
    assert "per round" in text
    assert "weakest class" in text


def _rounds(table: dict[str, list[float]]) -> list[RoundRow]:
    rows = []
    for name, accs in table.items():
        rows.append(row(0, name, 0.7, None))
        rows += [row(r, name, acc, None) for r, acc in enumerate(accs, start=1)]
    return rows


def test_paired_rule_drops_a_strategy_below_the_others_round_after_round() -> None:
    from alcli.agent.rules import PAIRED_Z, eliminate_paired, paired_standing

    # "low" is under the round's mean every round, by a gap that shrinks as the base grows
    table = {
        "a": [0.800, 0.850, 0.8800],
        "b": [0.805, 0.848, 0.8810],
        "c": [0.798, 0.853, 0.8790],
        "d": [0.802, 0.851, 0.8805],
        "e": [0.801, 0.849, 0.8795],
        "low": [0.780, 0.840, 0.8770],
    }
    rows = _rounds(table)
    alive = list(table)
    standing = paired_standing(rows)
    assert standing["low"][1] == 3
    assert standing["low"][0] / 3**0.5 < -PAIRED_Z
    assert eliminate_paired(rows, alive, min_rounds=2) == "low"
    # not before three rounds of evidence, nor before the run's own minimum
    assert (
        eliminate_paired(_rounds({k: v[:2] for k, v in table.items()}), alive, min_rounds=1) is None
    )
    assert eliminate_paired(rows, alive, min_rounds=4) is None
    # a strategy already gone is not a candidate; nor is anyone when one survivor is left
    assert eliminate_paired(rows, ["a", "b", "c", "d", "e"], min_rounds=2) is None
    assert eliminate_paired(rows, ["a"], min_rounds=1) is None


def test_paired_rule_keeps_strategies_that_trade_places() -> None:
    from alcli.agent.rules import eliminate_paired

    # each is last once and ahead otherwise: no confidence that any is worse
    table = {
        "a": [0.80, 0.86, 0.885, 0.90],
        "b": [0.81, 0.85, 0.890, 0.91],
        "c": [0.82, 0.87, 0.880, 0.905],
    }
    assert eliminate_paired(_rounds(table), list(table), min_rounds=1) is None
    # ties (every survivor equal) rank nobody
    flat = {name: [0.8, 0.85, 0.9, 0.92] for name in "abc"}
    assert eliminate_paired(_rounds(flat), list(flat), min_rounds=1) is None
