"""What ``alcli bench`` measures: how fast alcli embeds a user's pool on this machine, and why.

On the first ``limit`` items of the pool, each round measures two things:

- the pipeline, cold: ``embedding.embed`` into a fresh throw-away cache, timed both as the
  pipeline's own wall time (its stats: the rate a large pool runs at) and as the whole call
  (model build and cache writes included, fixed costs that a large pool amortises);
- the bound: the model alone on tensors decoded and stacked beforehand (``ModelOnly``).

One untimed batch first pays the process's one-time warm-up; a warm rerun on the last
round's cache follows. The ratio pipeline / bound and the stages' busy seconds name the
bottleneck (``diagnose``). The user's own cache is never opened: every cache lives in a
temporary folder removed at the end.

``benchmarks/embed_throughput.py`` builds its MNIST, local-vs-S3 measurements from the same
pieces (``ModelOnly``, ``in_fresh_thread``, ``timed_embed``).
"""

from __future__ import annotations

import contextlib
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
from typing import Any, TypeVar

import numpy as np
import torch

from alcli.cache import EmbeddingCache
from alcli.embedding import EmbedOptions, EmbedResult, embed
from alcli.errors import ItemError, PoolError, UsageError
from alcli.models import load_backbone, model_fingerprint, resolve_device
from alcli.sources import Pool, resolve_pool

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


class ModelOnly:
    """The bound: the model alone on tensors decoded and stacked beforehand.

    Each measurement tries one torch thread and all cores and keeps the better, so the
    pipeline's own thread choice cannot flatter the ratio. Blobs that do not decode are left
    out (the pipeline reports them); ``max_bytes`` caps the decoded tensors at whole batches.
    """

    def __init__(
        self, blobs: Iterable[bytes], options: EmbedOptions, *, max_bytes: int | None = None
    ) -> None:
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
        self.runs: list[dict[int, float]] = []

    def _measure(self, threads: int) -> float:
        torch.set_num_threads(threads)
        try:
            self.backbone.embed(self.batches[0])  # warm-up: oneDNN builds kernels on first use
            started = time.perf_counter()
            for batch in self.batches:
                self.backbone.embed(batch)
            return self.count / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(self.default_threads)

    def measure(self) -> dict[int, float]:
        run = {
            threads: float(in_fresh_thread(functools.partial(self._measure, threads)))
            for threads in sorted({1, self.default_threads})
        }
        self.runs.append(run)
        return run

    @property
    def best_threads(self) -> int:
        totals = {t: sum(run[t] for run in self.runs) for t in self.runs[0]}
        return max(totals, key=totals.__getitem__)


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


def diagnose(
    ratio: float,
    stages: Mapping[str, Mapping[str, float]],
    *,
    bound_ips: float,
    io_threads: int,
    decode_threads: int,
    cores: int,
) -> tuple[str, str]:
    """(kind, one-line hint) from pipeline / bound and the stages' utilization.

    Kinds: ``model`` (the pipeline keeps up with the model), ``contention`` (the model thread
    was busy but slower than alone), ``io`` / ``decode`` (the model waited on that stage),
    ``ramp`` (nothing saturated: a sample this small is mostly filling and draining).
    """
    infer = stages.get("infer", {})
    read = stages.get("prefetch", {})
    decode = stages.get("preprocess", {})
    if ratio >= MODEL_BOUND_RATIO:
        return "model", (
            f"model bound: the pipeline runs at {ratio:.0%} of the model's own speed; a smaller "
            "--image-size, a lighter --model or a GPU (--device cuda) is what makes it faster"
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
    """One round: the cold pipeline on the sample, then the bound right after it."""

    pipeline_ips: float  # the pipeline's own wall time (its stats)
    cold_ips: float  # the whole embed call: model build and cache writes included
    cold_s: float
    model_only_ips: float
    model_only_ips_by_torch_threads: dict[int, float]
    stats: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline_ips": round(self.pipeline_ips, 2),
            "cold_ips": round(self.cold_ips, 2),
            "cold_s": round(self.cold_s, 4),
            "model_only_ips": round(self.model_only_ips, 2),
            "model_only_ips_by_torch_threads": {
                str(t): round(v, 2) for t, v in self.model_only_ips_by_torch_threads.items()
            },
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
    load_average: list[float] = field(default_factory=list)

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
    def pipeline_vs_bound(self) -> float:
        """Each round against the bound measured in it, so a burst of load moves neither alone."""
        return float(np.median([r.pipeline_ips / r.model_only_ips for r in self.rounds]))

    @property
    def fixed_s(self) -> float:
        """Per-call seconds outside the pipeline (model build, cache open and writes)."""
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

    def diagnosis(self) -> tuple[str, str]:
        return diagnose(
            self.pipeline_vs_bound,
            self.stages,
            bound_ips=self.model_only_ips,
            io_threads=self.options.io_threads,
            decode_threads=self.options.decode_threads,
            cores=self.cores,
        )

    def as_dict(self) -> dict[str, Any]:
        kind, hint = self.diagnosis()
        reasons = Counter(_reason_kind(reason) for _, reason in self.failures)
        return {
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
            "pipeline_vs_bound": round(self.pipeline_vs_bound, 3),
            "bottleneck": kind,
            "hint": hint,
            "seconds": {
                "list": round(self.list_s, 4),
                "fixed": round(self.fixed_s, 4),
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
            },
            "machine": {
                "device": self.device,
                "cores": self.cores,
                "torch_threads": self.torch_threads,
                "torch_threads_default": self.torch_threads_default,
                "torch": torch.__version__,
                "load_average": self.load_average,
            },
            "rounds": [r.as_dict() for r in self.rounds],
        }


def _reason_kind(reason: str) -> str:
    """'corrupt image: broken data stream ...' -> 'corrupt image', to count failures by kind."""
    return reason.split(":", 1)[0].strip() or reason


def _read_in_order(pool: Pool, uris: Sequence[str], threads: int) -> Generator[bytes, None, None]:
    """The items' bytes in order, read ``threads`` at a time; unreadable ones left out."""

    def read(uri: str) -> bytes | None:
        try:
            return pool.read(uri)
        except ItemError:
            return None

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
    storage_options: dict[str, Any] | None = None,
    stdin: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure the pipeline (cold, then warm) and the model alone on the pool's first items.

    ``progress`` gets one line per step (the CLI sends them to stderr).
    """
    opts = options or EmbedOptions()
    if limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    if rounds < 1:
        raise UsageError(f"rounds must be at least 1, not {rounds}")
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
    sample = Pool(spec=pool.spec, items=pool.items[:limit], storage_options=pool.storage_options)
    n = len(sample.items)
    note(f"{n:,} of {len(pool.items):,} items, listed in {list_s:.2f} s")
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
                Pool(pool.spec, spare, storage_options=pool.storage_options),
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
                blobs = _read_in_order(sample, good, opts.io_threads)
                with contextlib.closing(blobs):
                    bound = ModelOnly(blobs, opts, max_bytes=BOUND_TENSOR_BYTES)
            note(f"{step}: model only")
            by_threads = bound.measure()
            measured.append(
                Round(
                    pipeline_ips=float(cold.stages.get("items_per_s", 0.0)),
                    cold_ips=n / cold_s,
                    cold_s=cold_s,
                    model_only_ips=max(by_threads.values()),
                    model_only_ips_by_torch_threads=by_threads,
                    stats=cold.stages,
                )
            )
        note("warm rerun")
        with EmbeddingCache(scratch / f"cold-{rounds - 1}") as cache:
            _, warm_s = timed_embed(sample, opts, cache)
    assert cold is not None  # rounds >= 1
    assert bound is not None
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
        device=str(bound.backbone.device),
        image_size=bound.backbone.image_size,
        bound_items=bound.count,
        cores=os.cpu_count() or 1,
        torch_threads_default=bound.default_threads,
        load_average=_load_average(),
    )
