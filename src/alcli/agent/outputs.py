"""What a run tells: the round table, a summary per round, the report, and its files.

Files in ``out_dir``, each written atomically: ``labeled.csv`` (``shared``: every label
bought; ``paper``: the winner's set), ``eval.csv`` (bought eval labels, with ``eval_frac``),
``rounds.csv``, ``report.json``, ``curves.png`` and ``head.npz`` (the final head,
``alcli.learner.load_head``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from alcli.agent.forecast import Forecast
from alcli.agent.heads import save_head
from alcli.labels import format_labels_csv, write_atomic
from alcli.learner import Head


@dataclass(frozen=True)
class RoundRow:
    """One strategy in one round: its set size, accuracy, forecast and fate."""

    round: int
    strategy: str
    labels: int
    labels_bought_total: int
    accuracy: float
    forecast: float | None
    eliminated: bool
    forecast_at: int | None = None  # the set size the forecast is for


@dataclass(frozen=True)
class RoundSummary:
    """What the progress callback gets after each round (round 0 is the pre-training)."""

    round: int
    rows: list[RoundRow]
    alive: list[str]
    eliminated: str | None
    labels_bought: int
    best_accuracy: float
    shared_accuracy: float | None


ProgressFn = Callable[[RoundSummary], None]


@dataclass
class Report:
    """The outcome of ``run_auto``; ``as_dict`` is what ``report.json`` holds."""

    rows: list[RoundRow]
    winner: str
    stop_reason: str
    final_accuracy: float
    final_evaluation: dict[str, Any]
    final_labels: int
    labels_bought: int
    eval_labels: int
    spend: str
    rounds: int
    config: dict[str, Any]
    shared_accuracy: list[dict[str, Any]]
    curves: dict[str, dict[str, Any]]
    timings: dict[str, float]
    strategy_seconds: dict[str, float]
    out_dir: str
    final_head: Head | None = field(default=None, repr=False)
    #: Per round: head, leader, forecasts and their errors, what was bought (``explain``).
    round_notes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "stop_reason": self.stop_reason,
            "final_accuracy": self.final_accuracy,
            "final_labels": self.final_labels,
            "labels_bought": self.labels_bought,
            "eval_labels": self.eval_labels,
            "spend": self.spend,
            "rounds": self.rounds,
            "final_evaluation": self.final_evaluation,
            "config": self.config,
            "rows": [asdict(row) for row in self.rows],
            "shared_accuracy": self.shared_accuracy,
            "round_notes": self.round_notes,
            "curves": self.curves,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "strategy_seconds": {k: round(v, 4) for k, v in self.strategy_seconds.items()},
            "out_dir": self.out_dir,
        }


def with_overhead(timings: Mapping[str, float]) -> dict[str, float]:
    """Seconds by part, plus ``overhead``: everything but waiting for the oracle."""
    out = dict(timings)
    out["overhead"] = sum(v for k, v in timings.items() if k != "oracle")
    return out


def write_outputs(
    out_dir: Path,
    report: Report,
    labeled: Mapping[str, str],
    eval_labels: Mapping[str, str],
) -> None:
    """Every output file of ``report``; ``labeled``: the final head's training labels."""
    write_atomic(out_dir / "labeled.csv", format_labels_csv(labeled))
    if eval_labels:
        write_atomic(out_dir / "eval.csv", format_labels_csv(eval_labels))
    write_atomic(out_dir / "rounds.csv", rounds_csv(report.rows))
    write_atomic(out_dir / "report.json", json.dumps(report.as_dict(), indent=2) + "\n")
    if report.final_head is not None:
        save_head(report.final_head, out_dir / "head.npz")
    plot_curves(report, out_dir / "curves.png")


def rounds_csv(rows: Sequence[RoundRow]) -> str:
    """The round table as CSV text, one column per ``RoundRow`` field; None as empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [f.name for f in fields(RoundRow)]
    writer.writerow(names)
    for row in rows:
        values = asdict(row)
        writer.writerow(["" if values[k] is None else values[k] for k in names])
    return buffer.getvalue()


def plot_curves(report: Report, path: Path) -> bool:
    """Accuracy vs labels per strategy, fitted curves dashed, forecasts as hollow markers.

    matplotlib is optional: without it the PNG is skipped with a warning (returns False).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed; skipped curves.png", stacklevel=2)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    by_name: dict[str, list[RoundRow]] = {}
    for row in report.rows:
        by_name.setdefault(row.strategy, []).append(row)
    for name, rows in by_name.items():
        n = np.array([r.labels for r in rows], dtype=np.float64)
        acc = np.array([r.accuracy for r in rows])
        (line,) = ax.plot(n, acc, marker="o", markersize=3, label=name)
        color = line.get_color()
        params = report.curves.get(name, {})
        if params.get("method") == "curve":
            fc = Forecast(**params)
            ahead = max((r.forecast_at or 0) for r in rows)
            grid = np.linspace(n.min(), max(n.max(), ahead), 100)
            values = fc.curve(grid)
            if values is not None:
                ax.plot(grid, values, linestyle="--", color=color, linewidth=1)
        for r in rows:
            if r.forecast is not None and r.forecast_at is not None:
                ax.plot(r.forecast_at, r.forecast, marker="o", fillstyle="none", color=color)
    if report.shared_accuracy and report.spend == "shared":
        ax.plot(
            [s["labels"] for s in report.shared_accuracy],
            [s["accuracy"] for s in report.shared_accuracy],
            color="black",
            linewidth=2,
            label="all labels (shared)",
        )
    target = report.config.get("target_accuracy")
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("labels in the strategy's set (black: all labels bought)")
    ax.set_ylabel("eval accuracy")
    ax.set_title(f"PSHEA ({report.spend}): winner {report.winner}, stop: {report.stop_reason}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True
