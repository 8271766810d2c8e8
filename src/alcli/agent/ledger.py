"""The labels a run buys: every URI asked of the oracle once, and saved before it is used.

Labels live in one store (``RunState.labels``): an item picked by two strategies (or again by
one after it was bought for another) is asked of the oracle and charged once. Evaluation
labels (``eval_frac``) have a store of their own, ``RunState.eval_labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.agent.state import RunState
from alcli.errors import OracleError, UsageError
from alcli.oracle import Oracle

PhaseHook = Callable[[str], None]


def row_index(uris: Sequence[str]) -> dict[str, int]:
    """Each URI's pool row; ``UsageError`` if one is listed twice (labels are kept by URI)."""
    row_of = {uri: row for row, uri in enumerate(uris)}
    if len(row_of) != len(uris):
        raise UsageError("the pool lists a URI twice", hint="deduplicate the pool")
    return row_of


class Ledger:
    """What was bought, by pool row; ``buy`` asks the oracle for what was not.

    ``save`` writes the state; ``phase`` is told each phase's name once its state is saved.
    """

    def __init__(
        self,
        uris: Sequence[str],
        row_of: Mapping[str, int],
        oracle: Oracle,
        state: RunState,
        *,
        save: Callable[[], None],
        phase: PhaseHook,
    ) -> None:
        self.uris = list(uris)
        self.row_of = row_of
        self.oracle = oracle
        self.state = state
        self.save = save
        self.phase = phase

    def buy(self, rows: Sequence[int], store: dict[str, str], phase: str) -> None:
        """Ask the oracle for the rows' labels missing from ``store`` and save them at once.

        ``phase`` names the point reached (``round1:after_oracle``); an oracle that fails
        (``OracleError``) or answers later (``PendingLabels``) leaves the state as it was.
        """
        wanted = [self.uris[r] for r in rows if self.uris[r] not in store]
        if wanted:
            with self.state.timed("oracle"):
                answer = self.oracle.label(wanted)
            missing = [uri for uri in wanted if uri not in answer]
            if missing:
                raise OracleError(
                    f"the oracle returned no label for {len(missing)} of {len(wanted)} URIs "
                    f"(first: {', '.join(missing[:3])})"
                )
            for uri in wanted:
                store[uri] = str(answer[uri])
            self.save()
        self.phase(phase)

    def is_bought(self, row: int) -> bool:
        return self.uris[row] in self.state.labels

    def bought_rows(self) -> list[int]:
        """The pool rows of every training label bought, in pool order (the shared head's)."""
        return sorted(self.row_of[uri] for uri in self.state.labels)

    def labels_of(self, rows: Sequence[int]) -> list[str]:
        labels = self.state.labels
        return [labels[self.uris[r]] for r in rows]

    def classes(self, eval_labels: Sequence[str]) -> NDArray[Any]:
        """Every label seen so far: probabilities are aligned to these for the strategies."""
        seen = set(self.state.labels.values()) | set(eval_labels)
        return np.array(sorted(seen))
