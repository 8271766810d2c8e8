"""What ``alcli select`` does, as a library: labels -> head -> strategy -> picks.

The pool's embeddings come from the cache (``alcli.embedding``), or from the user's own
arrays (``--probs`` / ``--embeddings``). A head is trained only when the strategy needs class
probabilities or a committee, so a cold-start strategy costs nothing but itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import alcli.strategies as strategies  # noqa: PLR0402 - mypy cannot map strategies/ here
from alcli.errors import LabelsError, StrategyError
from alcli.learner import fit_scaler
from alcli.strategy_inputs import strategy_inputs

#: Bootstrap heads in the committee of disagreement strategies (BALD, vote entropy).
COMMITTEE_SIZE = 5


@dataclass
class Picks:
    """The items to label next, in pick order, with the strategy's score for each."""

    strategy: str
    rows: np.ndarray
    uris: list[str]
    scores: np.ndarray
    n_pool: int
    n_labeled: int
    n_excluded: int
    timings: dict[str, float] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """One dict per pick: rank (1-based), uri, score, row."""
        return [
            {
                "rank": rank,
                "uri": uri,
                "score": None if np.isnan(score) else float(score),
                "row": int(row),
            }
            for rank, (uri, score, row) in enumerate(
                zip(self.uris, self.scores, self.rows, strict=True), start=1
            )
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "picked": len(self.rows),
            "pool": self.n_pool,
            "labeled": self.n_labeled,
            "excluded": self.n_excluded,
            "seconds": {k: round(v, 4) for k, v in self.timings.items()},
            "picks": self.records(),
        }


def match_labels(
    uris: Sequence[str],
    labels: Mapping[str, str],
    *,
    what: str = "labeled",
    hint: str = "check the pool spec and that the file's URIs use the same form",
) -> tuple[np.ndarray, list[str]]:
    """Rows of ``uris`` that ``labels`` names, and their labels, in pool order.

    A URI that the pool lacks is a ``LabelsError`` (a typo or the wrong pool is far more
    likely than an intended extra), naming how many and the first few, with ``hint``.
    """
    if not labels:
        return np.zeros(0, dtype=np.int64), []
    index = {uri: row for row, uri in enumerate(uris)}
    missing = [uri for uri in labels if uri not in index]
    if missing:
        shown = ", ".join(missing[:3])
        raise LabelsError(
            f"{len(missing)} {what} URIs are not in the pool (first: {shown})", hint=hint
        )
    rows = np.sort(np.fromiter((index[uri] for uri in labels), dtype=np.int64, count=len(labels)))
    return rows, [labels[uris[r]] for r in rows]


def pick(
    *,
    strategy: str,
    budget: int,
    uris: Sequence[str],
    embeddings: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    labels: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    seed: int = 0,
) -> Picks:
    """Run ``strategy`` over the pool and return the next ``budget`` items to label.

    ``labels`` (uri -> label) trains the head when the strategy needs probabilities; those
    items and the ``exclude`` URIs (already sent out for labeling, say) are never picked.
    With ``probs`` given, no head is trained: the user brought their own model.
    """
    info = strategies.get(strategy)
    timings: dict[str, float] = {}
    n = len(uris)
    labeled_rows, label_values = match_labels(uris, labels or {})
    excluded_rows, _ = match_labels(uris, dict.fromkeys(exclude, ""), what="excluded")
    blocked = np.zeros(n, dtype=bool)
    blocked[labeled_rows] = True
    blocked[excluded_rows] = True

    committee = None
    needs_model = bool({"probs", "committee"} & set(info.needs))
    if needs_model and probs is None and not len(labeled_rows):
        cold = ", ".join(s.name for s in strategies.available() if s.cold_start)
        raise StrategyError(
            f"{info.name} needs labeled items to train a head on (give --labeled labels.csv)",
            hint=f"for a cold start use one of: {cold}",
        )
    if needs_model and probs is None and embeddings is not None and len(labeled_rows):
        started = time.perf_counter()
        inputs = strategy_inputs(
            info.needs,
            embeddings,
            labeled_rows,
            label_values,
            scaler=fit_scaler(embeddings),
            seed=seed,
            committee_size=COMMITTEE_SIZE,
        )
        probs, committee = inputs.probs, inputs.committee
        timings["head_s"] = time.perf_counter() - started

    started = time.perf_counter()
    rows, scores = strategies.run_with_scores(
        info.name,
        budget=budget,
        probs=probs,
        committee=committee,
        embeddings=embeddings,
        labeled=blocked,
        seed=seed,
    )
    timings["strategy_s"] = time.perf_counter() - started
    return Picks(
        strategy=info.name,
        rows=rows,
        uris=[uris[r] for r in rows],
        scores=np.asarray(scores, dtype=np.float64),
        n_pool=n,
        n_labeled=len(labeled_rows),
        n_excluded=len(excluded_rows),
        timings=timings,
    )


def read_uri_list(path: str) -> list[str]:
    """URIs from a file: a ``.csv`` with a ``uri`` column, else one URI per line.

    Used for ``--exclude`` and ``--uris``; ``#`` comments and blank lines are skipped.
    """
    import csv

    from alcli.sources import normalize_uri

    with open(path, newline="") as f:
        if path.endswith(".csv"):
            reader = csv.DictReader(f)
            if not reader.fieldnames or "uri" not in reader.fieldnames:
                raise LabelsError(f"{path}: a CSV here needs a 'uri' column")
            raw = [row["uri"] for row in reader]
        else:
            raw = [line.strip() for line in f]
    return [normalize_uri(u) for u in raw if u and not u.startswith("#")]
