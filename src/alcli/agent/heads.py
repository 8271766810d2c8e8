"""The heads a run trains: each fitted once, saved, and found again by a resumed run.

A head is named by the digest of its training rows, in order (a label never changes once
bought, so the rows decide the labels). Each starts from the one it succeeds (a strategy's
head from its previous round's, the shared head from the last shared head, a committee from
its strategy's head): a round adds a few hundred rows, so L-BFGS needs about a third of the
iterations of a cold start (``alcli.learner``). A warm head is a deterministic function of its
rows and its starting head, so every head is written to ``out_dir/heads/<digest>.npz``
(atomically) as soon as it is trained, and a resumed run finds the exact heads the
interrupted one started from. Committee members are not saved: they are redrawn from their
seed and their strategy's saved head. Heads no saved state refers to are pruned after each
round.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from alcli.learner import DEFAULT_MAX_ITER, Head, HeadSpace, load_head, train_head
from alcli.learner.semisup import SELFTRAIN, fit_head_steps

#: Folder of ``out_dir`` holding every head the saved state may start a later head from.
HEADS_DIR = "heads"
#: Ends the name of a head fitted on the labeled rows alone in a self-training space.
LABELED_SUFFIX = "-l"
#: Heads remembered in memory by their training rows (a round's survivors and shared head fit).
HEAD_MEMO_SIZE = 16

Timer = Callable[[str], AbstractContextManager[None]]


def rows_key(rows: Sequence[int] | NDArray[np.int64]) -> str:
    """A head's name: the digest of its training rows, in order (labels never change)."""
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


def head_key(
    rows: Sequence[int] | NDArray[np.int64],
    max_iter: int | None = None,
    *,
    labeled_only: bool = False,
) -> str:
    """A saved head's name: ``rows_key``, plus the iteration cap when one was set, plus ``-l``
    for a head fitted on the labeled rows alone in a self-training space."""
    key = rows_key(rows)
    key = key if max_iter is None else f"{key}-i{max_iter}"
    return labeled_key(key) if labeled_only else key


def labeled_key(key: str) -> str:
    """The name of the labeled-rows-alone head (a self-training head's first step) beside
    the head named ``key``."""
    return f"{key}{LABELED_SUFFIX}"


def save_head(head: Head, path: Path) -> None:
    """``Head.save`` through a temporary file and ``os.replace``: all or nothing."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    head.save(str(tmp))
    os.replace(tmp, path)


class HeadStore:
    """Heads on the pool ``X`` by their rows' digest: in memory, then in ``out_dir/heads``.

    ``timed(part)`` measures a block into the run's timings ("heads" for fitting, "io" for
    writing).
    """

    def __init__(self, out_dir: Path, space: HeadSpace, *, l2: float, timed: Timer) -> None:
        self.folder = out_dir / HEADS_DIR
        self.space = space
        self.l2 = l2
        self.timed = timed
        self.memo: dict[str, Head] = {}  # oldest first

    def train(
        self,
        rows: Sequence[int],
        labels: Sequence[str],
        init: Head | None = None,
        *,
        max_iter: int | None = None,
        labeled_only: bool = False,
        part: str = "heads",
    ) -> Head:
        """The head on ``rows`` (in that order) with ``labels``, started from ``init``.

        ``max_iter``: an iteration cap below the default (``pooled`` evidence heads); such a
        head is named apart (``head_key``), so it never stands in for a full fit on the same
        rows. ``labeled_only``: in a self-training space, the head's first step alone (the
        labeled rows, no pseudo-labels; named apart too). ``part``: the timing it counts in.

        Looked up first in memory, then on disk (a resumed run): whatever started it, a head
        trained on these rows is a valid one, and returning the saved one is what keeps a
        resumed run identical. So the final head (the last round's shared head, or the
        winner's) and a set that gained nothing cost no second fit. A new head is saved
        before it is used; a self-trained one with its first step (named as ``labeled_only``
        names it), which a ``pooled`` run's next round reads as its evidence base instead of
        fitting it again (0.50 s at 5,700 labels, ``benchmarks/refit_profile_s12.json``).
        """
        rows_arr = np.asarray(rows, dtype=np.int64)
        labeled_only = labeled_only and self.space.kind in SELFTRAIN
        key = head_key(rows_arr, max_iter, labeled_only=labeled_only)
        head = self.get(key)
        if head is None:
            iterations = DEFAULT_MAX_ITER if max_iter is None else max_iter
            step = None
            with self.timed(part):
                if labeled_only:  # fit_head's first step: the same space, the labeled rows
                    head = train_head(
                        self.space.pool,
                        labels,
                        rows=rows_arr,
                        l2=self.l2,
                        scaler=self.space.scaler,
                        init=init,
                        max_iter=iterations,
                    )
                else:
                    step, head = fit_head_steps(
                        self.space, rows_arr, labels, l2=self.l2, init=init, max_iter=iterations
                    )
            if step is not None and step is not head:
                # the first step is the next round's evidence base (pooled spend): kept
                self._keep(head_key(rows_arr, max_iter, labeled_only=True), step)
            self._save(key, head)
        self._remember(key, head)
        return head

    def _keep(self, key: str, head: Head) -> None:
        """Save and remember ``head`` as ``key`` unless a head of that name exists, which is
        then the one remembered: a saved head is never replaced, so a resumed run reads what
        the first run used."""
        saved = self.get(key)
        if saved is None:
            self._save(key, head)
        self._remember(key, head if saved is None else saved)

    def _remember(self, key: str, head: Head) -> None:
        self.memo[key] = head
        while len(self.memo) > HEAD_MEMO_SIZE:
            del self.memo[next(iter(self.memo))]

    def get(self, key: str) -> Head | None:
        """The head named ``key`` from memory, else from disk, else None."""
        return self.memo.get(key) or self._load(key)

    def prune(self, keep: Iterable[str]) -> None:
        """Delete saved heads other than ``keep``: the saved state can no longer start from them."""
        wanted = set(keep)
        for path in self.folder.glob("*.npz"):
            if path.stem not in wanted:
                path.unlink(missing_ok=True)

    def _load(self, key: str) -> Head | None:
        path = self.folder / f"{key}.npz"
        try:
            head = load_head(str(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:  # torn or foreign file: train again
            warnings.warn(f"{path}: unreadable saved head ({exc}); training it again", stacklevel=2)
            return None
        width = self.space.pool.shape[1]
        if head.weights.shape[0] != width:  # saved by a release whose head space differed
            warnings.warn(
                f"{path}: saved head reads {head.weights.shape[0]} features, this run's head "
                f"space has {width}; training it again",
                stacklevel=2,
            )
            return None
        return head

    def _save(self, key: str, head: Head) -> None:
        with self.timed("io"):
            self.folder.mkdir(parents=True, exist_ok=True)
            save_head(head, self.folder / f"{key}.npz")
