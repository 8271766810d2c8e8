"""A run's durable facts: ``out_dir/state.json``, typed, versioned and written atomically.

The state holds what a resumed run cannot recompute (labels bought, each strategy's set, the
round table, the picks the oracle was last asked for) and nothing it can: what a strategy's
learning curve was fitted to, the best accuracy so far and the survivors' forecasts are views
of the round table (``history``, ``best``, ``forecasts``), so they cannot disagree with it.
It is rewritten (temp file + ``os.replace``) after selection, as soon as the oracle answers
(before any training) and after each round.

Versions (``version`` in the file):

1. The first layout; it also stored ``history`` (each strategy's [labels, accuracy] pairs),
   ``best`` (the best accuracy after each round) and ``forecasts`` (the survivors' entries of
   ``curves``). Read and migrated: those copies are dropped.
2. This layout: version 1 without the three copies.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.agent.config import AutoConfig
from alcli.agent.forecast import Forecast
from alcli.agent.outputs import RoundRow
from alcli.errors import UsageError
from alcli.labels import write_atomic

STATE_FILE = "state.json"
STATE_VERSION = 2
#: The keys of version 1 that version 2 derives instead of storing.
_DERIVED_IN_V2 = ("history", "best", "forecasts")


@dataclass(frozen=True)
class Pending:
    """A round's picks, saved before the oracle is asked, so a resumed run asks the same."""

    round: int
    picks: dict[str, list[int]]
    quota: dict[str, int]


@dataclass(frozen=True)
class SharedPoint:
    """The shared head's accuracy (trained on every label bought) after a round."""

    round: int
    labels: int
    accuracy: float
    #: What was bought and how good the model is, per round (issue 18; None in older states):
    #: calibration error (15-bin ECE), accuracy per true class, labels bought per class, and
    #: the strategy whose own head was best this round.
    ece: float | None = None
    per_class: dict[str, float] | None = None
    bought_by_class: dict[str, int] | None = None
    leader: str | None = None
    #: ``pooled``, from the rounds the leave-out rule reads on: each survivor's contribution
    #: to this head, [accuracy with its own picks − without, standard error, its picks]
    #: (``Race.leave_out``); None when not measured.
    leave_out: dict[str, list[float]] | None = None


@dataclass
class RunState:
    """Everything a run has decided and bought; ``save_state``/``load_state`` persist it."""

    config: AutoConfig
    pool_digest: str
    n_pool: int
    round: int = -1  # last completed round; 0 = pre-training done
    eval_rows: list[int] | None = None  # held-out pool rows (eval_frac), once drawn
    eval_labels: dict[str, str] = field(default_factory=dict)  # bought for evaluation
    labels: dict[str, str] = field(default_factory=dict)  # bought for training, by URI
    initial_rows: list[int] = field(default_factory=list)
    sets: dict[str, list[int]] = field(default_factory=dict)  # each strategy's rows
    alive: list[str] = field(default_factory=list)
    rows: list[RoundRow] = field(default_factory=list)
    shared: list[SharedPoint] = field(default_factory=list)
    shared_head: str | None = None  # rows digest of the last shared head (``heads``)
    #: Rows each strategy picked that were bought for training, round by round (a row two
    #: picked is both's; the initial set is no one's): what the shared head owes each buyer
    #: (``rules.eliminate_low_yield``). Empty in states saved before it existed.
    picked: dict[str, list[int]] = field(default_factory=dict)
    curves: dict[str, Forecast] = field(default_factory=dict)  # each strategy's last forecast
    pending: Pending | None = None
    stop_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    strategy_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fresh(cls, config: AutoConfig, pool_digest: str, n_pool: int) -> RunState:
        return cls(config, pool_digest, n_pool, alive=list(config.strategies))

    # -- views of the round table --

    def history(self, name: str) -> list[tuple[int, float]]:
        """(labels in its set, accuracy) of strategy ``name``, round by round."""
        return [(row.labels, row.accuracy) for row in self.rows if row.strategy == name]

    def current(self) -> dict[str, float]:
        """Each survivor's accuracy in the last round it raced."""
        last = {row.strategy: row.accuracy for row in self.rows}
        return {name: last[name] for name in self.alive}

    def forecasts(self) -> dict[str, Forecast]:
        """The survivors' forecasts from the last round (none before round 1)."""
        return {name: self.curves[name] for name in self.alive if name in self.curves}

    def last_accuracies(self) -> list[float]:
        """Every accuracy measured in the last round, the shared head's included."""
        last = [row.accuracy for row in self.rows if row.round == self.round]
        if self.shared and self.shared[-1].round == self.round:
            last.append(self.shared[-1].accuracy)
        return last

    def best(self) -> list[float]:
        """The best accuracy so far (any strategy or the shared head) after each round."""
        by_round = [-math.inf] * (self.round + 1)
        points = [(r.round, r.accuracy) for r in self.rows]
        points += [(s.round, s.accuracy) for s in self.shared]
        for rnd, accuracy in points:
            if rnd <= self.round:
                by_round[rnd] = max(by_round[rnd], accuracy)
        return list(itertools.accumulate(by_round, max))

    # -- bookkeeping --

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Add the block's seconds to ``timings[part]`` (kept across resumes)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[part] = self.timings.get(part, 0.0) + time.perf_counter() - started

    def as_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["config"] = self.config.as_dict()
        data["rows"] = [asdict(row) for row in self.rows]
        data["shared"] = [asdict(point) for point in self.shared]
        data["curves"] = {name: asdict(fc) for name, fc in self.curves.items()}
        data["pending"] = None if self.pending is None else asdict(self.pending)
        return {"version": STATE_VERSION, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunState:
        """Parse a current-version dict (``load_state`` migrates older ones first)."""
        values = {k: v for k, v in data.items() if k != "version"}
        pending = values["pending"]
        values["config"] = AutoConfig.from_dict(values["config"])
        values["rows"] = [RoundRow(**row) for row in values["rows"]]
        values["shared"] = [SharedPoint(**point) for point in values["shared"]]
        values["curves"] = {name: Forecast(**fc) for name, fc in values["curves"].items()}
        values["pending"] = None if pending is None else Pending(**pending)
        return cls(**values)


def load_state(out_dir: str | os.PathLike[str]) -> RunState:
    """The run saved in ``out_dir``, migrated to the current version; ``UsageError`` if none."""
    folder = Path(out_dir)
    path = folder / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no alcli auto run to resume in {folder}", hint="start one without --resume"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable run state ({exc})") from None
    version = data.get("version") if isinstance(data, dict) else None
    if version == 1:
        data = _migrate_v1(data)
    elif version != STATE_VERSION:
        raise UsageError(f"{path}: state version {version} is not supported")
    try:
        return RunState.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: unreadable run state ({exc!r})") from None


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 -> 2: drop the copies of the round table that version 2 derives."""
    return {k: v for k, v in data.items() if k not in _DERIVED_IN_V2} | {"version": 2}


def save_state(out_dir: Path, state: RunState) -> None:
    """Write ``state`` to ``out_dir/state.json``, all or nothing."""
    with state.timed("io"):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / STATE_FILE, json.dumps(state.as_json(), separators=(",", ":")))


def saved_config(out_dir: str | os.PathLike[str]) -> AutoConfig:
    """The config of the run saved in ``out_dir`` (what ``alcli auto --resume DIR`` reuses)."""
    return load_state(out_dir).config


def pool_digest(uris: Sequence[str], embeddings: NDArray[Any]) -> str:
    """Identity of the pool: its URIs in order, the array's shape and a few rows' bytes."""
    digest = hashlib.sha256()
    for uri in uris:
        digest.update(uri.encode("utf-8", "surrogateescape"))  # non-UTF-8 names too
        digest.update(b"\n")
    n = embeddings.shape[0]
    digest.update(repr(embeddings.shape).encode())
    for row in sorted({0, n // 2, n - 1}):
        digest.update(np.ascontiguousarray(embeddings[row], dtype=np.float32).tobytes())
    return digest.hexdigest()
