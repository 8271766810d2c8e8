"""Strategy timings: what ``alcli select --strategy S --budget B`` costs here, before running it.

Each strategy once, ``alcli.strategies.run(..., seed=0)``, at the size of the whole pool, on
synthetic arrays of the model's embedding width (``synthetic_inputs``). Arrays past
``STRATEGY_INPUT_BYTES`` are not built: the largest row count that fits is timed and scaled
linearly to the pool, flagged as an estimate. A strategy that raises gets an error row; the
others still run. ``benchmarks/strategies_scale.py`` times each strategy with
``time_strategy``. Only the zoo is imported here, so a process that only times strategies
stays as light as the strategies themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alcli.bench.synthetic import STRATEGY_CLASSES, input_bytes_per_row, synthetic_inputs
from alcli.errors import AlcliError, UsageError

#: What ``alcli bench`` times by default: the cheap uncertainty pair, the two diversity
#: costs (k-center, k-means) and two hybrids, a spread of the zoo's cost classes.
DEFAULT_STRATEGIES = ("margin", "entropy", "coreset", "kmeans", "badge", "dbal")
#: The synthetic strategy inputs (embeddings, probabilities, committee) stay under this; a
#: pool whose arrays would not is timed on the rows that fit and scaled up (an estimate).
STRATEGY_INPUT_BYTES = 1 << 30
#: Committee members for bald / vote_entropy, as ``alcli select`` trains (selection.py).
STRATEGY_COMMITTEE = 5


def strategy_names(spec: str | Sequence[str] | None) -> list[str]:
    """Registry names from a comma list of names, aliases, globs or families, in order.

    ``"margin,coreset"``, ``"*margin*"``, ``"uncertainty"``; ``"all"`` is the whole zoo.
    An unknown name is the registry's StrategyError, with its did-you-mean; a pattern that
    matches nothing is a UsageError. None or empty gives none.
    """
    import alcli.strategies as zoo

    parts = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if part.lower() == "all":
            found = [info.name for info in zoo.available()]
        elif any(char in part for char in "*?["):
            found = [info.name for info in zoo.available(part)]
            if not found:
                raise UsageError(
                    f"no strategy matches '{part}'", hint="run 'alcli strategies' to list them"
                )
        else:
            family = [info.name for info in zoo.available() if info.family == part.lower()]
            found = family or [zoo.get(part).name]  # get raises with its did-you-mean
        names.extend(name for name in found if name not in names)
    return names


def default_budget(pool_items: int) -> int:
    """1 % of the pool, at least 10 and at most 10,000: a typical ``select --budget``."""
    return min(10_000, max(10, pool_items // 100))


def _input_cap() -> int:
    """``STRATEGY_INPUT_BYTES`` as ``alcli.bench`` holds it now: the documented knob is the
    package's name, so setting it there takes effect (as it did when bench was one module)."""
    import alcli.bench

    cap: int = alcli.bench.STRATEGY_INPUT_BYTES
    return cap


def _status_mib(key: str) -> float | None:
    """A /proc/self/status memory line (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_peak_rss() -> float | None:
    """Restart the kernel's peak-RSS mark (VmHWM) from now; the RSS now, or None if we can't.

    Cheap (no allocation tracing, so the timing is not slowed) and it sees what tracemalloc
    misses (BLAS buffers).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return None
    return _status_mib("VmRSS")


@dataclass
class StrategyTiming:
    """One strategy's call on the synthetic arrays: seconds, or why it could not run."""

    name: str
    seconds: float | None
    picks: int = 0
    peak_extra_mib: float | None = None  # peak RSS over the RSS before the call
    error: str | None = None


@dataclass
class StrategyBench:
    """The strategies timed on ``rows`` synthetic rows, standing for a pool of ``pool_items``."""

    pool_items: int
    rows: int
    dim: int
    budget: int
    labeled: int
    committee: int  # members given to bald / vote_entropy; 0 when none was asked for
    input_bytes: int
    memory_cap: int
    inputs_s: float
    timings: list[StrategyTiming]

    @property
    def estimate(self) -> bool:
        """Fewer rows than the pool's were timed: the pool's seconds are scaled, not measured."""
        return self.rows < self.pool_items

    def pool_seconds(self, seconds: float) -> float:
        """Seconds at the pool's size: linear in rows (the budget stays the same)."""
        return seconds * self.pool_items / self.rows

    def note(self) -> str:
        text = (
            f"synthetic float32 inputs ({STRATEGY_CLASSES} Gaussian blobs, softmax over "
            f"{STRATEGY_CLASSES} classes, {self.labeled:,} labeled), seed 0; the strategy call "
            "only (alcli select also reads the cache and trains a head)"
        )
        if self.estimate:
            text += (
                f"; ESTIMATE: the inputs for {self.pool_items:,} rows exceed the "
                f"{self.memory_cap / 2**20:,.0f} MiB cap, so {self.rows:,} rows were timed and "
                "scaled linearly to the pool"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool_items": self.pool_items,
            "strategy_rows": self.rows,
            "estimate": self.estimate,
            "dim": self.dim,
            "budget": self.budget,
            "labeled": self.labeled,
            "classes": STRATEGY_CLASSES,
            "committee": self.committee,
            "input_mib": round(self.input_bytes / 2**20, 1),
            "memory_cap_mib": round(self.memory_cap / 2**20, 1),
            "inputs_s": round(self.inputs_s, 3),
            "note": self.note(),
            "results": [
                {
                    "name": t.name,
                    "seconds": None if t.seconds is None else round(t.seconds, 4),
                    "pool_seconds": (
                        None if t.seconds is None else round(self.pool_seconds(t.seconds), 4)
                    ),
                    "picks": t.picks,
                    "peak_extra_mib": t.peak_extra_mib,
                    "error": t.error,
                }
                for t in self.timings
            ],
        }


def time_strategy(
    name: str, budget: int, inputs: Mapping[str, np.ndarray | None]
) -> StrategyTiming:
    """One call of strategy ``name`` for ``budget`` picks on ``inputs`` (``zoo.run``'s keyword
    arrays): its seconds and the peak RSS it added, or the error it raised (not re-raised)."""
    import alcli.strategies as zoo

    rss = _reset_peak_rss()
    started = time.perf_counter()
    try:
        picks = zoo.run(name, budget=budget, seed=0, **inputs)
    except Exception as error:  # one broken strategy (a plugin, say) costs its row, not the bench
        known = isinstance(error, AlcliError)
        reason = str(error) if known else f"{type(error).__name__}: {error}"
        return StrategyTiming(name, None, error=reason)
    seconds = time.perf_counter() - started
    peak = _status_mib("VmHWM") if rss is not None else None
    extra = None if peak is None or rss is None else round(max(0.0, peak - rss), 1)
    return StrategyTiming(name, seconds, int(picks.size), extra)


def time_strategies(
    names: Sequence[str],
    *,
    pool_items: int,
    dim: int,
    budget: int | None = None,
    memory_cap: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> StrategyBench:
    """Time each strategy once with ``budget`` picks from a ``pool_items`` x ``dim`` pool.

    ``budget`` defaults to ``default_budget(pool_items)``; ``memory_cap`` to
    ``alcli.bench.STRATEGY_INPUT_BYTES`` (read at call time). A strategy that raises is
    reported with its error and the others still run. Committee strategies get
    ``STRATEGY_COMMITTEE`` members.
    """
    import alcli.strategies as zoo

    if pool_items < 1 or dim < 1:
        raise UsageError(f"nothing to time strategies on ({pool_items} rows of {dim} dims)")
    picks = default_budget(pool_items) if budget is None else budget
    if picks < 1:
        raise UsageError(f"--budget must be at least 1, not {picks}")
    note = progress or (lambda message: None)
    wants_committee = any("committee" in zoo.get(name).needs for name in names)
    committee = STRATEGY_COMMITTEE if wants_committee else 0
    cap = _input_cap() if memory_cap is None else memory_cap
    per_row = input_bytes_per_row(dim, committee)
    # At least two rows, so any cap leaves one labeled and one to pick.
    rows = min(pool_items, max(2, cap // per_row))
    scaled = f" (capped: {pool_items:,} would need {pool_items * per_row / 2**20:,.0f} MiB)"
    note(
        f"strategies: synthetic inputs, {rows:,} x {dim:,} float32"
        f"{scaled if rows < pool_items else ''}"
    )
    started = time.perf_counter()
    inputs = synthetic_inputs(rows, dim, committee=committee, seed=0)
    inputs_s = time.perf_counter() - started
    labeled = inputs["labeled"]
    assert labeled is not None
    timings = []
    for name in names:
        note(f"strategy {name}: budget {picks:,} of {rows:,} rows")
        timings.append(time_strategy(name, picks, inputs))
    return StrategyBench(
        pool_items=pool_items,
        rows=rows,
        dim=dim,
        budget=picks,
        labeled=int(labeled.sum()),
        committee=committee,
        input_bytes=sum(a.nbytes for a in inputs.values() if a is not None),
        memory_cap=cap,
        inputs_s=inputs_s,
        timings=timings,
    )
