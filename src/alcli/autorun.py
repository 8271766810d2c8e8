"""What ``alcli auto`` needs around the agent: its settings, oracle, eval set and report view.

The agent (``agent.py``) works on arrays and an ``Oracle``; this module turns what a user
types (an oracle spec, a labels file for evaluation that may lie outside the pool, a list of
strategy names) into those, and renders the report for humans. It also checks what a user
typed before the pool is embedded (``check_*``), so a wrong file costs milliseconds, not an
hour of embedding and eight rounds at accuracy 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from alcli.agent import STATE_FILE, AutoConfig, EvalSet, Report
from alcli.embedding import EmbedOptions, EmbedResult, embed
from alcli.errors import UsageError
from alcli.labels import load_labels_csv
from alcli.learner.semisup import check_components
from alcli.oracle import (
    CommandOracle,
    DirectoryOracle,
    LabelsFileOracle,
    LabelStudioOracle,
    Oracle,
    PendingLabels,
)
from alcli.output import has_line_break

__all__ = [
    "DEFAULT_CANDIDATES",
    "ClassWatch",
    "PendingLabels",
    "askable",
    "auto_config",
    "check_classes",
    "check_coverage",
    "check_run_dir",
    "eval_labels",
    "eval_set",
    "make_oracle",
    "new_run_dir",
    "read_eval",
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
    balance: str | None = None,
    min_distance: float | None = None,
    head: str = "logistic",
    graph_backend: str = "auto",
    head_components: int | None = None,
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
        balance=balance,
        min_distance=min_distance,
        head=head,
        graph_backend=graph_backend,
        head_components=check_components(head_components),
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
    """``--oracle labels.csv`` | ``--oracle dir:PATH`` | ``--oracle label-studio://HOST:PORT/ID``
    | ``--oracle-cmd 'PROGRAM ARGS'``."""
    if spec and command:
        raise UsageError("give --oracle or --oracle-cmd, not both")
    if command:
        return CommandOracle(command, timeout_s=timeout_s)
    if not spec:
        raise UsageError(
            "no oracle given",
            hint="--oracle labels.csv, --oracle dir:PATH, --oracle label-studio://HOST:PORT/ID "
            "or --oracle-cmd 'PROGRAM ARGS'",
        )
    if spec.startswith("dir:"):
        return DirectoryOracle(spec[4:])
    if spec.startswith("label-studio:"):
        return LabelStudioOracle(spec)
    if not Path(spec).is_file():
        raise UsageError(f"oracle labels file not found: {spec}")
    return LabelsFileOracle(spec)


def check_run_dir(folder: str, *, resume: bool) -> None:
    """Fail before any embedding when ``folder`` cannot hold the run.

    Without ``resume`` a folder that holds a run is refused (the agent refuses it too, but
    only after the pool is embedded); the folder, or the nearest folder above it that exists,
    must be a writable folder. Nothing is created here.
    """
    path = Path(folder)
    if not resume and (path / STATE_FILE).exists():
        raise UsageError(
            f"{folder} already holds an alcli auto run",
            hint="pass --resume to continue it, or choose another --out folder",
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot use {folder} as the run folder: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the run folder {folder}: {existing} is not writable")


def read_eval(path: str) -> dict[str, str]:
    """The ``--eval`` labels (``uri -> label``), read before anything is embedded."""
    labels = load_labels_csv(path)
    if not labels:
        raise UsageError(f"{path}: the eval file has no rows")
    return labels


def eval_labels(path: str | None, *, eval_frac: float | None) -> dict[str, str] | None:
    """The ``--eval`` labels, or None when the run holds out ``eval_frac`` of the pool
    instead; with neither, accuracy has nothing to be measured on (a ``UsageError``)."""
    if path is not None:
        return read_eval(path)
    if eval_frac is None:
        raise UsageError("no evaluation set", hint="give --eval FILE (labeled) or --eval-frac F")
    return None


def _no_shared_class(source: str, bought: Collection[str], evaluated: Collection[str]) -> str:
    def few(values: Collection[str]) -> str:
        shown = sorted(values)[:4]
        return ", ".join(map(repr, shown)) + (", ..." if len(values) > len(shown) else "")

    return (
        f"{source} share no class with the eval set ({few(bought)} vs {few(evaluated)}): "
        "every accuracy would be 0"
    )


def check_classes(oracle: Oracle, eval_labels: Mapping[str, str] | None) -> None:
    """A labels-file oracle whose classes are none of the eval set's: stop before buying.

    Other oracles answer later; ``ClassWatch`` checks their first answers.
    """
    if eval_labels is None or not isinstance(oracle, LabelsFileOracle) or not oracle.labels:
        return
    bought, evaluated = set(oracle.labels.values()), set(eval_labels.values())
    if not bought & evaluated:
        raise UsageError(
            _no_shared_class(f"the labels in {oracle.path}", bought, evaluated),
            hint="both files must name classes the same way",
        )


def check_coverage(oracle: Oracle, uris: Sequence[str]) -> None:
    """A labels-file oracle that labels no item of the pool is the wrong file or pool; a Label
    Studio oracle must answer, and be able to show every item (``LabelStudioOracle.check``)."""
    if isinstance(oracle, LabelStudioOracle):
        oracle.check(uris)
        return
    if not isinstance(oracle, LabelsFileOracle) or not uris:
        return
    labels = oracle.labels
    if not any(uri in labels for uri in uris):
        raise UsageError(
            f"the oracle's labels file {oracle.path} labels none of the pool's "
            f"{len(uris):,} items (first: {uris[0]})",
            hint="check the pool and that the file's URIs use the same form",
        )


class ClassWatch:
    """An oracle that remembers the classes it answered, for a check after each round.

    When none of the labels bought (by this process: a resumed run too) is a class of the
    eval set, every head scores 0 on it (another vocabulary: "0" against "zero"); ``check``,
    called after round 0, stops the run there with exit 2. The agent has saved those labels
    by then, so ``--resume`` with a fixed eval set keeps them.
    """

    def __init__(self, oracle: Oracle, evaluation: EvalSet | None, folder: str) -> None:
        self.oracle = oracle
        self.classes = None if evaluation is None else {str(y) for y in evaluation.labels}
        self.folder = folder
        self.seen: set[str] = set()

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        answer = self.oracle.label(uris)
        self.seen.update(str(label) for label in answer.values())
        return answer

    def check(self) -> None:
        if self.classes is None or not self.seen or self.seen & self.classes:
            return
        raise UsageError(
            _no_shared_class("the oracle's labels", self.seen, self.classes),
            hint=f"the labels bought are saved: fix --eval, then alcli auto --resume {self.folder}",
        )


def askable(
    oracle: Oracle,
    uris: Sequence[str],
    embeddings: NDArray[Any],
    *,
    warn: Callable[[str], None],
) -> tuple[Sequence[str], NDArray[Any]]:
    """The pool rows the oracle can be asked about; the others are left out with a warning.

    A command oracle reads one URI per line, so a name with a line break in it would reach
    it as two (a forged one among them): such items cannot be labeled by it and are not
    raced, like any other bad item.
    """
    if not isinstance(oracle, CommandOracle):
        return uris, embeddings
    bad = [row for row, uri in enumerate(uris) if has_line_break(uri)]
    if not bad:
        return uris, embeddings
    warn(
        f"{len(bad)} items left out: a line break in the name cannot be sent to --oracle-cmd, "
        f"one URI per line (first: {uris[bad[0]]!r})"
    )
    keep = np.ones(len(uris), dtype=bool)
    keep[bad] = False
    kept = [uri for uri, ok in zip(uris, keep, strict=True) if ok]
    subset = getattr(embeddings, "subset", None)  # a streamed pool stays streamed (alcli.rows)
    return kept, subset(np.flatnonzero(keep)) if subset is not None else embeddings[keep]


def eval_set(
    path: str,
    labels: Mapping[str, str],
    pool: EmbedResult,
    *,
    options: EmbedOptions,
    cache_dir: str | None,
    storage_options: dict[str, Any],
) -> EvalSet:
    """The labeled eval items (``labels``, read from ``path``): pool rows where they are in
    the pool, else embedded.

    Teams usually keep a held-out set apart from the pool; it is embedded with the same model
    (and cached like any pool), so accuracy is measured in the same feature space.
    """
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
        uris=list(result.uris),
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
    if report.round_notes:
        console.print(round_notes_table(report))
    console.print(
        f"winner: {report.winner}   stop: {report.stop_reason}   "
        f"final accuracy: {report.final_accuracy:.4f} on {report.final_labels:,} labels   "
        f"labels bought: {report.labels_bought:,} ({report.spend} spend)",
        markup=False,
    )
    console.print(
        f"files: {report.out_dir}/labeled.csv, rounds.csv, report.json, curves.png", markup=False
    )


def round_notes_table(report: Report) -> Table:
    """Per round: head, leader, the forecasts' error, the returned model's accuracy and
    calibration, its weakest class, the labels bought per class this round, who went."""
    table = Table(title="alcli auto: per round", header_style="bold", box=None, pad_edge=False)
    columns = ("round", "head", "leader", "fc err (pt)", "model acc", "ECE", "weakest class")
    for column in (*columns, "bought this round (class:n)", "eliminated"):
        table.add_column(column, justify="right" if column in columns[3:6] else "left")
    for note in report.round_notes:
        per_class = note.get("per_class") or {}
        weakest = min(per_class, key=lambda k: (per_class[k], k)) if per_class else None
        bought = note.get("bought_this_round_by_class") or {}
        standing = note.get("paired_standing") or {}
        gone = [f"{s} ({standing[s]:+.2f})" if s in standing else s for s in note["eliminated"]]
        table.add_row(
            str(note["round"]),
            note["head"],
            f"{note['leader']} {note['leader_accuracy']:.4f}",
            "" if note["forecast_mae_pt"] is None else f"{note['forecast_mae_pt']:.2f}",
            "" if "model_accuracy" not in note else f"{note['model_accuracy']:.4f}",
            "" if note.get("ece") is None else f"{note['ece']:.3f}",
            "" if weakest is None else f"{weakest}: {per_class[weakest]:.3f}",
            " ".join(f"{k}:{v}" for k, v in sorted(bought.items())),
            ", ".join(gone),
        )
    return table
