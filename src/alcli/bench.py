"""What ``alcli bench`` measures: how fast alcli embeds and selects on this machine, and why.

On the first ``limit`` items of the pool, each round measures three things:

- the pipeline, cold: ``embedding.embed`` into a fresh throw-away cache, timed both as the
  pipeline's own wall time (its stats: the rate a large pool runs at) and as the whole call
  (model build and cache writes included, fixed costs that a large pool amortises);
- the bound: the model alone on tensors decoded and stacked beforehand (``ModelOnly``);
- the baseline: a plain sequential loop (``sequential_ips``), read, decode, infer one batch
  at a time, the way DeepAL-style tools embed a pool; the pipeline has to beat it.

One untimed batch first pays the process's one-time warm-up; a warm rerun on the last
round's cache follows. The ratio pipeline / bound and the stages' busy seconds name the
bottleneck (``diagnose``). The user's own cache is never opened: every cache lives in a
temporary folder removed at the end.

Then the strategies (``time_strategies``): each one once, at the size of the whole pool, on
synthetic arrays of the model's embedding width (``synthetic_inputs``), so a user learns what
``alcli select --strategy S --budget B`` costs here before running it. Arrays past
``STRATEGY_INPUT_BYTES`` are not built: the largest row count that fits is timed and scaled
linearly to the pool, flagged as an estimate.

``benchmarks/embed_throughput.py`` builds its MNIST, local-vs-S3 measurements from the same
pieces (``ModelOnly``, ``in_fresh_thread``, ``timed_embed``, ``sequential_ips``), and
``benchmarks/strategies_scale.py`` times each strategy with ``time_strategy``. torch and the
model code are imported where a model is built, not with this module, so a process that only
times strategies stays as light as the strategies themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from alcli.cache import EmbeddingCache
from alcli.embedding import EmbedOptions, EmbedResult, embed, read_threads
from alcli.errors import AlcliError, ItemError, PoolError, UsageError
from alcli.sources import Pool, resolve_pool

if TYPE_CHECKING:
    import torch

    from alcli.models import Backbone

T = TypeVar("T")

#: pipeline / bound at or above this: the model itself is the limit.
MODEL_BOUND_RATIO = 0.85
#: A stage whose threads were busy this share of the run held the model up.
SATURATED = 0.8
#: The bound's pre-decoded tensors stop growing past this (whole batches, at least one), so a
#: large --limit at a large --image-size cannot exhaust memory; the bound is a rate anyway.
BOUND_TENSOR_BYTES = 512 << 20
#: Failures listed one by one in the report (all are counted by reason).
FAILURES_SHOWN = 20
#: What ``alcli bench`` times by default: the cheap uncertainty pair, the two diversity
#: costs (k-center, k-means) and two hybrids, a spread of the zoo's cost classes.
DEFAULT_STRATEGIES = ("margin", "entropy", "coreset", "kmeans", "badge", "dbal")
#: The synthetic strategy inputs (embeddings, probabilities, committee) stay under this; a
#: pool whose arrays would not is timed on the rows that fit and scaled up (an estimate).
STRATEGY_INPUT_BYTES = 1 << 30
#: Blobs in the synthetic embeddings, and classes in the synthetic probabilities.
STRATEGY_CLASSES = 10
#: Committee members for bald / vote_entropy, as ``alcli select`` trains (selection.py).
STRATEGY_COMMITTEE = 5


def in_fresh_thread(function: Callable[[], T]) -> T:
    """Run ``function`` on a new thread, as the pipeline runs its model.

    On this 2-core machine, two OpenMP threads driven from the main thread measured 2x slower
    under load than the same two driven from a fresh thread; measuring the baselines where the
    pipeline runs its model keeps the comparison fair.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name="bench-model")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def layout_key(streams: int, threads: int) -> str:
    """How a model run is laid out: ``"2x1"`` is two streams of one torch thread each."""
    return f"{streams}x{threads}"


def layout_cores(key: str) -> int:
    """Cores a layout keeps busy (streams times threads)."""
    streams, threads = key.split("x")
    return int(streams) * int(threads)


class ModelOnly:
    """The bound: the model alone on tensors decoded and stacked beforehand.

    Each measurement tries one stream on one torch thread, one on all of them, and the
    pipeline's own CPU layout (``cpu_streams()`` streams sharing the threads, each on its
    own batches), and keeps the best, so the pipeline's choice cannot flatter the ratio.
    Blobs that do not decode are left out (the pipeline reports them); ``max_bytes`` caps the
    decoded tensors at whole batches.
    """

    def __init__(
        self, blobs: Iterable[bytes], options: EmbedOptions, *, max_bytes: int | None = None
    ) -> None:
        import torch

        from alcli.models import load_backbone

        self.backbone = load_backbone(
            options.model, options.weights, options.image_size, options.device
        )
        size = options.batch_size
        tensors: list[torch.Tensor] = []
        used = 0
        for blob in blobs:
            if max_bytes is not None and used >= max_bytes and len(tensors) % size == 0:
                break
            try:
                tensor = self.backbone.preprocess(blob)
            except ItemError:
                continue
            tensors.append(tensor)
            used += tensor.element_size() * tensor.nelement()
        if not tensors:
            raise UsageError("no image decoded: nothing to run the model on")
        self.batches = [torch.stack(tensors[i : i + size]) for i in range(0, len(tensors), size)]
        self.count = len(tensors)
        self.default_threads = torch.get_num_threads()
        self.runs: list[dict[str, float]] = []

    def layouts(self) -> list[tuple[int, int]]:
        """(streams, threads per stream) to try: 1 x 1, 1 x all, the pipeline's CPU layout."""
        from alcli.pipeline import cpu_streams

        streams = cpu_streams(self.default_threads)
        shared = (streams, max(1, self.default_threads // streams))
        return sorted({(1, 1), (1, self.default_threads), shared})

    def _measure(self, streams: int, threads: int) -> float:
        import torch

        torch.set_num_threads(threads)
        try:
            self.backbone.embed(self.batches[0])  # warm-up: oneDNN builds kernels on first use
            batches = iter(self.batches)
            lock = threading.Lock()

            def stream() -> None:
                while True:
                    with lock:
                        batch = next(batches, None)
                    if batch is None:
                        return
                    self.backbone.embed(batch)

            started = time.perf_counter()
            others = [threading.Thread(target=stream) for _ in range(streams - 1)]
            for other in others:
                other.start()
            stream()
            for other in others:
                other.join()
            return self.count / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(self.default_threads)

    def measure(self) -> dict[str, float]:
        """Images per second by layout (``layout_key``), one pass over the batches each."""
        run = {
            layout_key(streams, threads): float(
                in_fresh_thread(functools.partial(self._measure, streams, threads))
            )
            for streams, threads in self.layouts()
        }
        self.runs.append(run)
        return run

    @property
    def best_threads(self) -> int:
        """The faster torch thread count for one stream (what a plain loop runs with)."""
        totals = {
            key: sum(run[key] for run in self.runs) for key in self.runs[0] if key.startswith("1x")
        }
        return int(max(totals, key=totals.__getitem__).split("x")[1])


def timed_embed(
    pool: str | Pool,
    options: EmbedOptions,
    cache: EmbeddingCache | str | Path,
    storage_options: dict[str, Any] | None = None,
) -> tuple[EmbedResult, float]:
    """``embedding.embed`` and the seconds the whole call took, as a user's call pays them."""
    started = time.perf_counter()
    result = embed(pool, options=options, cache=cache, storage_options=storage_options)
    return result, time.perf_counter() - started


def _or_none(function: Callable[[T], Any], argument: T) -> Any:
    """``function(argument)``, or None for an item that cannot be read or decoded."""
    try:
        return function(argument)
    except ItemError:
        return None


def sequential_ips(
    pool: str | Pool,
    options: EmbedOptions,
    storage_options: dict[str, Any] | None = None,
    threads: int | None = None,
    *,
    backbone: Backbone | None = None,
) -> float:
    """Items/s of a plain loop, one batch at a time: read every item, decode every item, infer.

    How DeepAL-style tools embed a pool, with nothing overlapped: the baseline the pipeline
    has to beat. Run it with the bound's best torch thread count (``threads``), so the
    comparison is not flattered. A spec is listed inside the timed loop, as a plain script
    would; a ``Pool`` is taken as listed. Unreadable or undecodable items are skipped but
    counted, as the pipeline's own rate counts its failures. ``backbone`` reuses a built
    model (no second build); none builds one from ``options``, outside the timing.
    """
    import torch

    from alcli.models import load_backbone

    model = backbone or load_backbone(
        options.model, options.weights, options.image_size, options.device
    )

    def run() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            started = time.perf_counter()
            listed = (
                pool
                if isinstance(pool, Pool)
                else resolve_pool(pool, storage_options=storage_options)
            )
            uris = listed.uris
            for start in range(0, len(uris), options.batch_size):
                chunk = uris[start : start + options.batch_size]
                blobs = [_or_none(listed.read, uri) for uri in chunk]
                decoded = [_or_none(model.preprocess, blob) for blob in blobs if blob is not None]
                tensors = [tensor for tensor in decoded if tensor is not None]
                if tensors:
                    model.embed(torch.stack(tensors))
            return len(uris) / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(before)

    return float(in_fresh_thread(run))


def diagnose(
    ratio: float,
    stages: Mapping[str, Mapping[str, float]],
    *,
    bound_ips: float,
    io_threads: int,
    decode_threads: int,
    cores: int,
    build_wait_s: float = 0.0,
    wall_s: float = 0.0,
) -> tuple[str, str]:
    """(kind, one-line hint) from pipeline / bound and the stages' utilization.

    Kinds: ``model`` (the pipeline keeps up with the model), ``build`` (it would, but for the
    first batch waiting ``build_wait_s`` of the pipeline's ``wall_s`` for the network: a
    small sample's artefact), ``contention`` (the model thread was busy but slower than
    alone), ``io`` / ``decode`` (the model waited on that stage), ``ramp`` (nothing
    saturated: a sample this small is mostly filling and draining).
    """
    infer = stages.get("infer", {})
    read = stages.get("prefetch", {})
    decode = stages.get("preprocess", {})
    if ratio >= MODEL_BOUND_RATIO:
        return "model", (
            f"model bound: the pipeline runs at {ratio:.0%} of the model's own speed; a smaller "
            "--image-size, a lighter --model or a GPU (--device cuda) is what makes it faster"
        )
    if 0 < build_wait_s < wall_s and ratio * wall_s / (wall_s - build_wait_s) >= MODEL_BOUND_RATIO:
        after = ratio * wall_s / (wall_s - build_wait_s)
        return "build", (
            f"the first batch waited {build_wait_s:.2f} s for the model to build; after it the "
            f"pipeline ran at {after:.0%} of the model's own speed, and a large pool amortises "
            "the build (raise --limit to see it)"
        )
    if infer.get("utilization", 0.0) >= SATURATED:
        inside = infer.get("items_per_busy_s", 0.0)
        return "contention", (
            f"CPU contention: the model was kept busy but ran at {inside:,.0f} items/s against "
            f"{bound_ips:,.0f} alone; other processes or the {decode_threads} decode threads "
            f"compete for the {cores} cores (a quieter machine, or fewer --decode-threads)"
        )
    read_use, decode_use = read.get("utilization", 0.0), decode.get("utilization", 0.0)
    if read_use >= SATURATED and read_use >= decode_use:
        return "io", (
            f"I/O bound: the model waited on reads ({read_use:.0%} of the I/O threads' time "
            f"busy); raise --io-threads (now {io_threads})"
        )
    if decode_use >= SATURATED:
        if decode_threads < cores:
            return "decode", (
                f"decode bound: the model waited on decoding ({decode_use:.0%} busy); raise "
                f"--decode-threads (now {decode_threads}, {cores} cores)"
            )
        return "decode", (
            f"decode bound: the model waited on decoding and the {decode_threads} decode "
            f"threads already match the {cores} cores; smaller source images would help"
        )
    return "ramp", (
        f"no stage saturated (model busy {infer.get('utilization', 0.0):.0%} of the run): a "
        "sample this small is mostly the pipeline filling and draining; raise --limit"
    )


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

    @property
    def typical(self) -> Round:
        """The round with the median pipeline rate: its stages are the ones reported."""
        ordered = sorted(self.rounds, key=lambda r: r.pipeline_ips)
        return ordered[len(ordered) // 2]

    @property
    def pipeline_ips(self) -> float:
        return float(np.median([r.pipeline_ips for r in self.rounds]))

    @property
    def cold_ips(self) -> float:
        return float(np.median([r.cold_ips for r in self.rounds]))

    @property
    def model_only_ips(self) -> float:
        return float(np.median([r.model_only_ips for r in self.rounds]))

    @property
    def sequential_ips(self) -> float:
        return float(np.median([r.sequential_ips for r in self.rounds]))

    @property
    def pipeline_vs_sequential(self) -> float:
        """Each round against the plain loop run in it: how much the pipeline buys here."""
        return float(np.median([r.pipeline_ips / r.sequential_ips for r in self.rounds]))

    @property
    def pipeline_vs_bound(self) -> float:
        """Each round against the bound measured in it, so a burst of load moves neither alone."""
        return float(np.median([r.pipeline_ips / r.model_only_ips for r in self.rounds]))

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
        import torch

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
            "bottleneck": kind,
            "hint": hint,
            "seconds": {
                "list": round(self.list_s, 4),
                "fixed": round(self.fixed_s, 4),
                "model_build": self.model_build.get("seconds", 0.0),
                "model_build_waited": self.model_build.get("waited_s", 0.0),
                "warm": round(self.warm_s, 4),
                "estimate_cold_pool": round(self.estimate_cold_s, 1),
            },
            "stages": {
                name: {
                    key: stage[key]
                    for key in ("threads", "busy_s", "utilization", "items_per_busy_s")
                    if key in stage
                }
                for name, stage in self.stages.items()
            },
            "settings": {
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
            },
            "machine": {
                "device": self.device,
                "cores": self.cores,
                "torch_threads": self.torch_threads,
                "model_streams": self.model_streams,
                "torch_threads_default": self.torch_threads_default,
                "torch": torch.__version__,
                "load_average": self.load_average,
            },
            "rounds": [r.as_dict() for r in self.rounds],
        }
        if self.strategies is not None:
            report["strategies"] = self.strategies.as_dict()
        return report


# ---------------------------------------------------------------------------------------------
# Strategies: what ``alcli select`` will cost at the size of the whole pool.


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


def input_bytes_per_row(dim: int, committee: int = 0) -> int:
    """Bytes one pool row takes in the synthetic inputs: embedding, probabilities, mask."""
    return 4 * dim + 4 * STRATEGY_CLASSES * (1 + committee) + 1


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Row softmax in place (float32 in, float32 out): no second n x C array."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def synthetic_inputs(
    rows: int, dim: int, *, committee: int = 0, seed: int = 0
) -> dict[str, np.ndarray | None]:
    """Seeded float32 stand-ins for a pool's arrays, shaped like what ``select`` passes.

    Embeddings: ``STRATEGY_CLASSES`` Gaussian blobs (centres uniform in [-10, 10]^dim, unit
    spread, like sklearn's make_blobs), so the diversity strategies see clusters. Probs: a
    softmax of noisy scores favouring each row's blob, so some rows are uncertain; the
    committee is ``committee`` more such draws. 1 % of the rows (at least one) labeled.
    Built in place and in row chunks, so the peak is the arrays themselves.
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10.0, 10.0, size=(STRATEGY_CLASSES, dim)).astype(np.float32)
    blob = rng.integers(0, STRATEGY_CLASSES, size=rows)
    embeddings = rng.standard_normal((rows, dim), dtype=np.float32)
    chunk = max(1, (64 << 20) // max(1, 4 * dim))
    for start in range(0, rows, chunk):
        embeddings[start : start + chunk] += centres[blob[start : start + chunk]]

    def probabilities() -> np.ndarray:
        scores = rng.standard_normal((rows, STRATEGY_CLASSES), dtype=np.float32)
        scores[np.arange(rows), blob] += 2.0
        return _softmax(scores)

    probs = probabilities()
    members = np.stack([probabilities() for _ in range(committee)]) if committee else None
    labeled = np.zeros(rows, dtype=bool)
    labeled[rng.choice(rows, size=max(1, rows // 100), replace=False)] = True
    return {"embeddings": embeddings, "probs": probs, "committee": members, "labeled": labeled}


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
    ``STRATEGY_INPUT_BYTES`` (read at call time). A strategy that raises is reported with its
    error and the others still run. Committee strategies get ``STRATEGY_COMMITTEE`` members.
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
    cap = STRATEGY_INPUT_BYTES if memory_cap is None else memory_cap
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


def _reason_kind(reason: str) -> str:
    """'corrupt image: broken data stream ...' -> 'corrupt image', to count failures by kind."""
    return reason.split(":", 1)[0].strip() or reason


def _read_in_order(pool: Pool, uris: Sequence[str], threads: int) -> Generator[bytes, None, None]:
    """The items' bytes in order, read ``threads`` at a time; unreadable ones left out."""

    read = functools.partial(_or_none, pool.read)
    chunk = max(16, threads)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="alcli-bench-read") as workers:
        for start in range(0, len(uris), chunk):
            for data in workers.map(read, uris[start : start + chunk]):
                if data is not None:
                    yield data


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_bench(
    spec: str | Pool,
    *,
    options: EmbedOptions | None = None,
    limit: int = 256,
    rounds: int = 1,
    strategies: str | Sequence[str] | None = DEFAULT_STRATEGIES,
    budget: int | None = None,
    storage_options: dict[str, Any] | None = None,
    stdin: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure the pipeline (cold, then warm), the model alone and a plain loop on the pool's
    first items, then time ``strategies`` (see ``strategy_names``; None skips them) with
    ``budget`` picks at the whole pool's size.

    ``progress`` gets one line per step (the CLI sends them to stderr).
    """
    opts = options or EmbedOptions()
    if limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    if rounds < 1:
        raise UsageError(f"rounds must be at least 1, not {rounds}")
    if budget is not None and budget < 1:
        raise UsageError(f"--budget must be at least 1, not {budget}")
    # Unknown strategies fail now, with the registry's did-you-mean, not after the pipeline.
    names = strategy_names(strategies)
    from alcli.models import model_fingerprint, resolve_device

    # A wrong model, weights or device fails here, before a long listing: both build nothing.
    model_fingerprint(opts.model, opts.weights, opts.image_size)
    resolve_device(opts.device)
    note = progress or (lambda message: None)
    started = time.perf_counter()
    pool = (
        spec
        if isinstance(spec, Pool)
        else resolve_pool(spec, storage_options=storage_options, stdin=stdin)
    )
    list_s = time.perf_counter() - started
    sample = Pool(
        spec=pool.spec,
        items=pool.items[:limit],
        storage_options=pool.storage_options,
        unreadable=pool.unreadable,  # so skipped items keep the reason resolving found
    )
    n = len(sample.items)
    note(f"{n:,} of {len(pool.items):,} items, listed in {list_s:.2f} s")
    # The count embed would pick for these items, fixed so every measurement uses it.
    io_threads = read_threads(opts.io_threads, sample.uris)
    opts = dataclasses.replace(opts, io_threads=io_threads)
    measured: list[Round] = []
    bound: ModelOnly | None = None
    with tempfile.TemporaryDirectory(prefix="alcli-bench-", ignore_cleanup_errors=True) as tmp:
        scratch = Path(tmp)
        # The process's first forward passes pay one-time costs (kernel generation, thread
        # pools, first allocations) that a large pool amortises and the bound's own warm-up
        # excludes; one untimed batch, past the sample where the pool has one, pays them here.
        spare = pool.items[limit : limit + opts.batch_size] or sample.items[: opts.batch_size]
        note("warm-up: one batch through the pipeline, not timed")
        with EmbeddingCache(scratch / "warm-up") as cache:
            embed(
                Pool(
                    pool.spec,
                    spare,
                    storage_options=pool.storage_options,
                    unreadable=pool.unreadable,
                ),
                options=opts,
                cache=cache,
            )
        cold: EmbedResult | None = None
        for number in range(rounds):
            step = f"round {number + 1}/{rounds}"
            note(f"{step}: pipeline, cold cache")
            with EmbeddingCache(scratch / f"cold-{number}") as cache:
                cold, cold_s = timed_embed(sample, opts, cache)
            if not cold.items:
                first = cold.failures[0]
                raise PoolError(
                    f"none of the first {n:,} items could be embedded",
                    hint=f"e.g. {first.uri}: {first.reason}",
                )
            if bound is None:
                note(f"{step}: decoding the sample for the model-only bound")
                good = [item.uri for item in cold.items]
                blobs = _read_in_order(sample, good, io_threads)
                with contextlib.closing(blobs):
                    bound = ModelOnly(blobs, opts, max_bytes=BOUND_TENSOR_BYTES)
            note(f"{step}: model only")
            by_layout = bound.measure()
            note(f"{step}: plain sequential loop")
            sequential = sequential_ips(
                sample, opts, threads=bound.best_threads, backbone=bound.backbone
            )
            measured.append(
                Round(
                    pipeline_ips=float(cold.stages.get("items_per_s", 0.0)),
                    cold_ips=n / cold_s,
                    cold_s=cold_s,
                    model_only_ips=max(by_layout.values()),
                    model_only_ips_by_layout=by_layout,
                    stats=cold.stages,
                    sequential_ips=sequential,
                )
            )
        note("warm rerun")
        with EmbeddingCache(scratch / f"cold-{rounds - 1}") as cache:
            _, warm_s = timed_embed(sample, opts, cache)
    assert cold is not None  # rounds >= 1
    assert bound is not None
    device, image_size = str(bound.backbone.device), bound.backbone.image_size
    bound_items, default_threads = bound.count, bound.default_threads
    sequential_threads = bound.best_threads
    dim = int(cold.embeddings.shape[1])
    del bound  # its decoded tensors (up to BOUND_TENSOR_BYTES) before the strategies' arrays
    timed = (
        time_strategies(names, pool_items=len(pool.items), dim=dim, budget=budget, progress=note)
        if names
        else None
    )
    return BenchReport(
        pool=pool.spec,
        pool_items=len(pool.items),
        limit=limit,
        items=n,
        embedded=len(cold.items),
        failures=[(f.uri, f.reason) for f in cold.failures],
        list_s=list_s,
        rounds=measured,
        warm_ips=n / warm_s,
        warm_s=warm_s,
        options=opts,
        device=device,
        image_size=image_size,
        bound_items=bound_items,
        cores=os.cpu_count() or 1,
        torch_threads_default=default_threads,
        sequential_threads=sequential_threads,
        load_average=_load_average(),
        strategies=timed,
    )
