"""What a run hands out: ordered batches, the items skipped, a stage's error, the counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alcli.errors import RunError

STAGES = ("prefetch", "preprocess", "infer")


@dataclass(slots=True)
class Failure:
    """One pool item that was skipped, and why."""

    index: int
    uri: str
    reason: str
    unreachable: bool = False  # the store did not answer: nothing is known about the item


@dataclass(slots=True)
class BatchResult:
    """Embeddings for ``indices`` (positions in the input), plus the items skipped meanwhile.

    Every batch has ``batch_size`` rows except the last, which may even have none when the
    last items all failed: it then only carries their failures.
    """

    indices: np.ndarray  # int64 [n]
    embeddings: np.ndarray  # float32 [n, dim]
    failures: list[Failure]


class StageError(RunError):
    """A stage raised something other than ItemError: a bug or a broken model, not a bad item."""

    def __init__(self, stage: str, where: str, error: BaseException) -> None:
        detail = str(error).splitlines()[0] if str(error) else ""
        super().__init__(
            f"{stage} stage failed on {where}: {type(error).__name__}: {detail}".rstrip(": "),
            hint="this is not a bad image; the run was stopped",
        )
        self.stage = stage
        self.where = where
        self.__cause__ = error


@dataclass(slots=True)
class StageStats:
    """Items a stage finished and the seconds its threads spent working on them."""

    threads: int
    items: int = 0
    busy_s: float = 0.0

    def add(self, items: int, busy_s: float) -> None:
        self.items += items
        self.busy_s += busy_s

    def as_dict(self, wall_s: float) -> dict[str, float]:
        return {
            "threads": self.threads,
            "items": self.items,
            "busy_s": round(self.busy_s, 4),
            # items per second over the run: equal across stages when the pipeline flows
            "items_per_s": round(self.items / wall_s, 2) if wall_s > 0 else 0.0,
            # what one busy thread of this stage sustains: the stage's own speed
            "items_per_busy_s": round(self.items / self.busy_s, 2) if self.busy_s > 0 else 0.0,
            # share of the stage's thread-time spent working: near 1.0 marks the bottleneck
            "utilization": round(self.busy_s / (wall_s * self.threads), 3) if wall_s > 0 else 0.0,
        }


@dataclass
class PipelineStats:
    """Per-stage counters plus wall time; ``as_dict()`` is what ``--json`` summaries print."""

    stages: dict[str, StageStats]
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    items_done: int = 0
    failures: int = 0
    stopped: bool = False
    torch_threads: int | None = None  # what the model ran with (the tuner's final choice)
    model_streams: int = 1  # model threads running batches side by side

    @property
    def wall_s(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def as_dict(self) -> dict[str, Any]:
        wall = self.wall_s
        return {
            "wall_s": round(wall, 4),
            "items": self.items_done,
            "failures": self.failures,
            "items_per_s": round(self.items_done / wall, 2) if wall > 0 else 0.0,
            "stopped": self.stopped,
            "torch_threads": self.torch_threads,
            "model_streams": self.model_streams,
            "stages": {name: stage.as_dict(wall) for name, stage in self.stages.items()},
        }
