"""Where a run measures accuracy, and which pool items that takes out of the race.

Evaluation labels are not charged to the budget: with an ``EvalSet`` they are given; with
``eval_frac`` the run holds out that fraction of the pool (drawn from the run's seed) and
buys its labels once, reported as ``eval_labels``. Held-out items are never picked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.agent.config import AutoConfig, EvalSet
from alcli.agent.ledger import Ledger
from alcli.agent.rules import derive_seed
from alcli.agent.state import RunState
from alcli.errors import UsageError


@dataclass(frozen=True)
class Holdout:
    """The labeled items accuracy is measured on, and the pool rows never to pick."""

    X: NDArray[Any]
    y: list[str]
    blocked: NDArray[np.bool_]  # [pool] True where a pool item is an eval item


def held_out_size(
    row_of: Mapping[str, int], eval_set: EvalSet | None, eval_frac: float | None
) -> int:
    """How many pool items the eval set takes out of the race."""
    if eval_set is not None:
        return sum(uri in row_of for uri in eval_set.uris)
    return max(1, round((eval_frac or 0.0) * len(row_of)))


def check_sizes(row_of: Mapping[str, int], eval_set: EvalSet | None, config: AutoConfig) -> None:
    """Fail before anything is bought when the pool cannot hold the eval and initial sets."""
    free = len(row_of) - held_out_size(row_of, eval_set, config.eval_frac)
    if free < config.initial:
        raise UsageError(
            f"the pool has {free} items outside the eval set, fewer than the initial "
            f"random set of {config.initial}",
            hint="lower --initial or --eval-frac, or use a larger pool",
        )


def hold_out(
    X: NDArray[Any],
    ledger: Ledger,
    state: RunState,
    eval_set: EvalSet | None,
    *,
    save: Callable[[], None],
) -> Holdout:
    """The given eval set, or the held-out pool rows with their labels bought (once)."""
    blocked = np.zeros(len(ledger.uris), dtype=bool)
    if eval_set is not None:
        for uri in eval_set.uris:
            row = ledger.row_of.get(uri)
            if row is not None:
                blocked[row] = True
        y = [str(label) for label in eval_set.labels]
        return Holdout(X=np.asarray(eval_set.embeddings), y=y, blocked=blocked)
    if state.eval_rows is None:
        size = held_out_size(ledger.row_of, None, state.config.eval_frac)
        rng = np.random.default_rng(derive_seed(state.config.seed, "eval"))
        drawn = rng.choice(len(ledger.uris), size=size, replace=False)
        state.eval_rows = sorted(int(r) for r in drawn)
        save()
    rows = state.eval_rows
    ledger.buy(rows, state.eval_labels, "eval:after_oracle")
    rows_arr = np.asarray(rows, dtype=np.int64)
    blocked[rows_arr] = True
    y = [state.eval_labels[ledger.uris[r]] for r in rows]
    return Holdout(X=np.asarray(X[rows_arr]), y=y, blocked=blocked)
