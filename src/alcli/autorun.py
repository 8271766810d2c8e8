"""What ``alcli auto`` needs around the agent: its settings, oracle, eval set and report view.

The agent (``agent.py``) works on arrays and an ``Oracle``; this module turns what a user
types (an oracle spec, a labels file for evaluation that may lie outside the pool, a list of
strategy names) into those, and renders the report for humans.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alcli.agent import AutoConfig, EvalSet, Report
from alcli.embedding import EmbedOptions, EmbedResult, embed
from alcli.errors import UsageError
from alcli.oracle import (
    CommandOracle,
    DirectoryOracle,
    LabelsFileOracle,
    Oracle,
    PendingLabels,
    load_labels_csv,
)

__all__ = [
    "DEFAULT_CANDIDATES",
    "PendingLabels",
    "auto_config",
    "eval_set",
    "make_oracle",
    "new_run_dir",
    "render_report",
]

#: The default race: the paper's seven families in spirit: uncertainty (three views of it),
#: diversity (k-center) and hybrids that mix both (BADGE, DBAL, cluster-margin).
DEFAULT_CANDIDATES = (
    "margin",
    "entropy",
    "least_confidence",
    "coreset",
    "badge",
    "dbal",
    "cluster_margin",
)


def auto_config(
    *,
    target_acc: float,
    budget: int,
    candidates: str | None,
    initial: int,
    round_size: int,
    spend: str,
    seed: int,
    eval_frac: float | None,
) -> AutoConfig:
    """An ``AutoConfig`` from CLI values; names are checked against the registry."""
    names = tuple(n.strip() for n in (candidates or "").split(",") if n.strip())
    return AutoConfig(
        target_accuracy=target_acc,
        budget=budget,
        strategies=names or DEFAULT_CANDIDATES,
        initial=initial,
        round_size=round_size,
        seed=seed,
        spend=spend,
        eval_frac=eval_frac,
    ).checked()


def new_run_dir(root: str | Path = "alcli-runs") -> str:
    """A fresh folder name under ``root`` (timestamped; never an existing run's)."""
    base = Path(root) / time.strftime("auto-%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return str(path)


def make_oracle(spec: str | None, command: str | None, *, timeout_s: float) -> Oracle:
    """``--oracle labels.csv`` | ``--oracle dir:PATH`` | ``--oracle-cmd 'PROGRAM ARGS'``."""
    if spec and command:
        raise UsageError("give --oracle or --oracle-cmd, not both")
    if command:
        return CommandOracle(command, timeout_s=timeout_s)
    if not spec:
        raise UsageError(
            "no oracle given",
            hint="--oracle labels.csv, --oracle dir:PATH or --oracle-cmd 'PROGRAM ARGS'",
        )
    if spec.startswith("dir:"):
        return DirectoryOracle(spec[4:])
    if not Path(spec).is_file():
        raise UsageError(f"oracle labels file not found: {spec}")
    return LabelsFileOracle(spec)


def eval_set(
    path: str,
    pool: EmbedResult,
    *,
    options: EmbedOptions,
    cache_dir: str | None,
    storage_options: dict[str, Any],
) -> EvalSet:
    """The labeled eval items of ``path``: pool rows where they are in the pool, else embedded.

    Teams usually keep a held-out set apart from the pool; it is embedded with the same model
    (and cached like any pool), so accuracy is measured in the same feature space.
    """
    labels = load_labels_csv(path)
    if not labels:
        raise UsageError(f"{path}: the eval file has no rows")
    in_pool = set(pool.uris)
    if all(uri in in_pool for uri in labels):
        return EvalSet.from_pool(pool.uris, pool.embeddings, labels)
    result = embed(path, options=options, cache=cache_dir, storage_options=storage_options)
    if result.failures:
        first = result.failures[0]
        raise UsageError(
            f"{len(result.failures)} eval items could not be embedded "
            f"(first: {first.uri}: {first.reason})"
        )
    return EvalSet(
        uris=result.uris,
        embeddings=result.embeddings,
        labels=[labels[uri] for uri in result.uris],
    )


def render_report(report: Report, console: Console) -> None:
    """The round table, then the winner, the stop reason and where the files are."""
    table = Table(title="alcli auto: rounds", header_style="bold", box=None, pad_edge=False)
    for column in ("round", "strategy", "labels", "bought", "accuracy", "forecast", "eliminated"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in report.rows:
        table.add_row(
            str(row.round),
            row.strategy,
            f"{row.labels:,}",
            f"{row.labels_bought_total:,}",
            f"{row.accuracy:.4f}",
            "" if row.forecast is None else f"{row.forecast:.4f}",
            "yes" if row.eliminated else "",
        )
    console.print(table)
    console.print(
        f"winner: {report.winner}   stop: {report.stop_reason}   "
        f"final accuracy: {report.final_accuracy:.4f} on {report.final_labels:,} labels   "
        f"labels bought: {report.labels_bought:,} ({report.spend} spend)",
        markup=False,
    )
    console.print(
        f"files: {report.out_dir}/labeled.csv, rounds.csv, report.json, curves.png", markup=False
    )
