"""What ``alcli bench`` reports: the rounds, their medians, the diagnosis, the ``--json`` object.

Each ratio is the median over rounds of values measured in the same round, so a burst of load
moves neither side alone; the stages shown are the median round's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from alcli.bench.diagnosis import diagnose
from alcli.embedding import EmbedOptions

if TYPE_CHECKING:
    from alcli.bench.strategy_timing import StrategyBench

#: Failures listed one by one in the report (all are counted by reason).
FAILURES_SHOWN = 20


@dataclass
class Round:
    """One round: the cold pipeline on the sample, then the bound and the plain loop."""

    pipeline_ips: float  # the pipeline's own wall time (its stats)
    cold_ips: float  # the whole embed call: model build and cache writes included
    cold_s: float
    model_only_ips: float
    model_only_ips_by_layout: dict[str, float]  # streams x threads (``layout_key``)
    stats: dict[str, Any]
    sequential_ips: float = 0.0  # the plain read/decode/infer loop on the same items
    #: the bound of each precision/runtime (``Numerics.describe``), in the pipeline's layout
    bound_by_numerics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline_ips": round(self.pipeline_ips, 2),
            "cold_ips": round(self.cold_ips, 2),
            "cold_s": round(self.cold_s, 4),
            "model_only_ips": round(self.model_only_ips, 2),
            "model_only_ips_by_layout": {
                key: round(v, 2) for key, v in self.model_only_ips_by_layout.items()
            },
            "sequential_ips": round(self.sequential_ips, 2),
            "bound_by_numerics": {k: round(v, 2) for k, v in self.bound_by_numerics.items()},
            "stats": self.stats,
        }


@dataclass
class BenchReport:
    """What ``alcli bench`` prints; ``as_dict()`` is the ``--json`` object."""

    pool: str
    pool_items: int
    limit: int
    items: int
    embedded: int
    failures: list[tuple[str, str]]
    list_s: float
    rounds: list[Round]
    warm_ips: float
    warm_s: float
    options: EmbedOptions
    device: str
    image_size: int
    bound_items: int
    cores: int
    torch_threads_default: int
    sequential_threads: int = 1
    load_average: list[float] = field(default_factory=list)
    strategies: StrategyBench | None = None

    def _median(self, value: Callable[[Round], float]) -> float:
        return float(np.median([value(r) for r in self.rounds]))

    @property
    def typical(self) -> Round:
        """The round with the median pipeline rate: its stages are the ones reported."""
        ordered = sorted(self.rounds, key=lambda r: r.pipeline_ips)
        return ordered[len(ordered) // 2]

    @property
    def pipeline_ips(self) -> float:
        return self._median(lambda r: r.pipeline_ips)

    @property
    def cold_ips(self) -> float:
        return self._median(lambda r: r.cold_ips)

    @property
    def model_only_ips(self) -> float:
        return self._median(lambda r: r.model_only_ips)

    @property
    def sequential_ips(self) -> float:
        return self._median(lambda r: r.sequential_ips)

    @property
    def pipeline_vs_sequential(self) -> float:
        """Each round against the plain loop run in it: how much the pipeline buys here."""
        return self._median(lambda r: r.pipeline_ips / r.sequential_ips)

    @property
    def bound_by_numerics(self) -> dict[str, float]:
        """Each precision/runtime's bound, the median over rounds."""
        keys = [key for r in self.rounds for key in r.bound_by_numerics]
        return {
            key: float(np.median([r.bound_by_numerics[key] for r in self.rounds]))
            for key in dict.fromkeys(keys)
            if all(key in r.bound_by_numerics for r in self.rounds)
        }

    @property
    def fastest_numerics(self) -> str | None:
        """The precision/runtime with the highest bound (None when none was measured)."""
        bounds = self.bound_by_numerics
        return max(bounds, key=bounds.__getitem__) if bounds else None

    @property
    def pipeline_vs_bound(self) -> float:
        """Each round against the bound measured in it, so a burst of load moves neither alone."""
        return self._median(lambda r: r.pipeline_ips / r.model_only_ips)

    @property
    def fixed_s(self) -> float:
        """Per-call seconds outside the pipeline (cache open, compaction; the model builds
        inside it, beside the first reads: see ``model_build``)."""
        typical = self.typical
        return max(0.0, typical.cold_s - float(typical.stats.get("wall_s", 0.0)))

    @property
    def estimate_cold_s(self) -> float:
        """A cold ``alcli embed`` of the whole pool at this rate: listing + fixed + pipeline."""
        return self.list_s + self.fixed_s + self.pool_items / max(self.pipeline_ips, 1e-9)

    @property
    def stages(self) -> dict[str, dict[str, float]]:
        stages: dict[str, dict[str, float]] = self.typical.stats.get("stages", {})
        return stages

    @property
    def torch_threads(self) -> int | None:
        threads: int | None = self.typical.stats.get("torch_threads")
        return threads

    @property
    def model_streams(self) -> int:
        streams: int = self.typical.stats.get("model_streams", 1)
        return streams

    @property
    def model_build(self) -> dict[str, float]:
        """The cold run's model build: its seconds, and how long the first batch waited."""
        build: dict[str, float] = self.typical.stats.get("model_build", {})
        return build

    def diagnosis(self) -> tuple[str, str]:
        return diagnose(
            self.pipeline_vs_bound,
            self.stages,
            bound_ips=self.model_only_ips,
            io_threads=self.options.io_threads or 0,  # run_bench resolves it
            decode_threads=self.options.decode_threads,
            cores=self.cores,
            build_wait_s=self.model_build.get("waited_s", 0.0),
            wall_s=float(self.typical.stats.get("wall_s", 0.0)),
        )

    def as_dict(self) -> dict[str, Any]:
        kind, hint = self.diagnosis()
        reasons = Counter(_reason_kind(reason) for _, reason in self.failures)
        report = {
            "pool": self.pool,
            "pool_items": self.pool_items,
            "items": self.items,
            "embedded": self.embedded,
            "failed": len(self.failures),
            "failure_reasons": dict(reasons.most_common()),
            "failures": [
                {"uri": uri, "reason": reason} for uri, reason in self.failures[:FAILURES_SHOWN]
            ],
            "model_only_ips": round(self.model_only_ips, 2),
            "pipeline_ips": round(self.pipeline_ips, 2),
            "cold_ips": round(self.cold_ips, 2),
            "warm_ips": round(self.warm_ips, 2),
            "sequential_ips": round(self.sequential_ips, 2),
            "pipeline_vs_bound": round(self.pipeline_vs_bound, 3),
            "pipeline_vs_sequential": round(self.pipeline_vs_sequential, 3),
            "numerics": self.options.numerics().describe(),
            "bound_by_numerics": {k: round(v, 2) for k, v in self.bound_by_numerics.items()},
            "fastest_numerics": self.fastest_numerics,
            "bottleneck": kind,
            "hint": hint,
            "seconds": self._seconds(),
            "stages": {
                name: {
                    key: stage[key]
                    for key in ("threads", "busy_s", "utilization", "items_per_busy_s")
                    if key in stage
                }
                for name, stage in self.stages.items()
            },
            "settings": self._settings(),
            "machine": self._machine(),
            "rounds": [r.as_dict() for r in self.rounds],
        }
        if self.strategies is not None:
            report["strategies"] = self.strategies.as_dict()
        return report

    def _seconds(self) -> dict[str, float]:
        return {
            "list": round(self.list_s, 4),
            "fixed": round(self.fixed_s, 4),
            "model_build": self.model_build.get("seconds", 0.0),
            "model_build_waited": self.model_build.get("waited_s", 0.0),
            "warm": round(self.warm_s, 4),
            "estimate_cold_pool": round(self.estimate_cold_s, 1),
        }

    def _settings(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "rounds": len(self.rounds),
            "model": self.options.model,
            "weights": self.options.weights,
            "image_size": self.image_size,
            "batch_size": self.options.batch_size,
            "io_threads": self.options.io_threads,
            "decode_threads": self.options.decode_threads,
            "bound_items": self.bound_items,
            "sequential_torch_threads": self.sequential_threads,
        }

    def _machine(self) -> dict[str, Any]:
        import torch

        return {
            "device": self.device,
            "cores": self.cores,
            "torch_threads": self.torch_threads,
            "model_streams": self.model_streams,
            "torch_threads_default": self.torch_threads_default,
            "torch": torch.__version__,
            "load_average": self.load_average,
        }


def _reason_kind(reason: str) -> str:
    """'corrupt image: broken data stream ...' -> 'corrupt image', to count failures by kind."""
    return reason.split(":", 1)[0].strip() or reason
