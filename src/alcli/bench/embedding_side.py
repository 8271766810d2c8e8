"""The embedding side of ``alcli bench``: the cold pipeline, the bound and the plain loop, by round.

On the sample (the pool's first ``limit`` items) each round measures the pipeline, cold
(``timed_embed`` into a fresh throw-away cache: its own wall time, the rate a large pool runs
at, and the whole call, model build and cache writes included), the bound (``ModelOnly``) and
the baseline: a plain sequential loop (``sequential_ips``), read, decode, infer one batch at a
time, the way DeepAL-style tools embed a pool; the pipeline has to beat it. One untimed batch
first pays the process's one-time warm-up; a warm rerun on the last round's cache follows.
Every cache lives in a temporary folder removed at the end: the user's own is never opened.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alcli.bench.bound import BOUND_TENSOR_BYTES, ModelOnly, backbone_for, in_fresh_thread
from alcli.bench.report import Round
from alcli.cache import EmbeddingCache
from alcli.embedding import EmbedOptions, EmbedResult, embed
from alcli.errors import ItemError, PoolError
from alcli.sources import Pool, resolve_pool

if TYPE_CHECKING:
    from alcli.models import Backbone

T = TypeVar("T")


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

    model = backbone or backbone_for(options)

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


def _read_in_order(pool: Pool, uris: Sequence[str], threads: int) -> Generator[bytes, None, None]:
    """The items' bytes in order, read ``threads`` at a time; unreadable ones left out."""

    read = functools.partial(_or_none, pool.read)
    chunk = max(16, threads)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="alcli-bench-read") as workers:
        for start in range(0, len(uris), chunk):
            for data in workers.map(read, uris[start : start + chunk]):
                if data is not None:
                    yield data


@dataclass
class EmbeddingSide:
    """What the rounds measured, and what the report needs of the bound: only numbers, so
    the bound's decoded tensors are freed before the strategies' arrays are built."""

    rounds: list[Round]
    cold: EmbedResult  # the last round's cold run: its items, failures and embedding width
    warm_s: float
    device: str
    image_size: int
    bound_items: int
    torch_threads_default: int
    sequential_threads: int  # the bound's best thread count for one stream


def measure_embedding(
    pool: Pool,
    sample: Pool,
    options: EmbedOptions,
    *,
    rounds: int,
    note: Callable[[str], None],
) -> EmbeddingSide:
    """Warm-up, ``rounds`` rounds on ``sample`` (the pool's first items), then a warm rerun.

    The bound is decoded once, in the first round, from the items the cold pipeline embedded.
    """
    measured: list[Round] = []
    bound: ModelOnly | None = None
    cold: EmbedResult | None = None
    with tempfile.TemporaryDirectory(prefix="alcli-bench-", ignore_cleanup_errors=True) as tmp:
        scratch = Path(tmp)
        _warm_up(pool, sample, options, scratch / "warm-up", note)
        for number in range(rounds):
            step = f"round {number + 1}/{rounds}"
            done, cold, bound = _measure_round(
                step, sample, options, scratch / f"cold-{number}", bound, note
            )
            measured.append(done)
        note("warm rerun")
        with EmbeddingCache(scratch / f"cold-{rounds - 1}") as cache:
            _, warm_s = timed_embed(sample, options, cache)
    assert cold is not None  # rounds >= 1
    assert bound is not None
    return EmbeddingSide(
        rounds=measured,
        cold=cold,
        warm_s=warm_s,
        device=str(bound.backbone.device),
        image_size=bound.backbone.image_size,
        bound_items=bound.count,
        torch_threads_default=bound.default_threads,
        sequential_threads=bound.best_threads,
    )


def _warm_up(
    pool: Pool, sample: Pool, options: EmbedOptions, cache_dir: Path, note: Callable[[str], None]
) -> None:
    """One untimed batch through the pipeline, past the sample where the pool has one.

    The process's first forward passes pay one-time costs (kernel generation, thread pools,
    first allocations) that a large pool amortises and the bound's own warm-up excludes.
    """
    size = options.batch_size
    spare = pool.items[len(sample.items) : len(sample.items) + size] or sample.items[:size]
    note("warm-up: one batch through the pipeline, not timed")
    with EmbeddingCache(cache_dir) as cache:
        embed(
            Pool(
                pool.spec,
                spare,
                storage_options=pool.storage_options,
                unreadable=pool.unreadable,
            ),
            options=options,
            cache=cache,
        )


def _measure_round(
    step: str,
    sample: Pool,
    options: EmbedOptions,
    cache_dir: Path,
    bound: ModelOnly | None,
    note: Callable[[str], None],
) -> tuple[Round, EmbedResult, ModelOnly]:
    """One round: the cold pipeline, the bound (decoded now if ``bound`` is None), the loop."""
    n = len(sample.items)
    note(f"{step}: pipeline, cold cache")
    with EmbeddingCache(cache_dir) as cache:
        cold, cold_s = timed_embed(sample, options, cache)
    if not cold.items:
        first = cold.failures[0]
        raise PoolError(
            f"none of the first {n:,} items could be embedded",
            hint=f"e.g. {first.uri}: {first.reason}",
        )
    if bound is None:
        note(f"{step}: decoding the sample for the model-only bound")
        good = [item.uri for item in cold.items]
        blobs = _read_in_order(sample, good, options.io_threads or 1)
        with contextlib.closing(blobs):
            bound = ModelOnly(blobs, options, max_bytes=BOUND_TENSOR_BYTES)
    note(f"{step}: model only")
    by_layout = bound.measure()
    note(f"{step}: model only, by precision and runtime")
    by_numerics = bound.measure_numerics(options)
    note(f"{step}: plain sequential loop")
    sequential = sequential_ips(
        sample, options, threads=bound.best_threads, backbone=bound.backbone
    )
    measured = Round(
        pipeline_ips=float(cold.stages.get("items_per_s", 0.0)),
        cold_ips=n / cold_s,
        cold_s=cold_s,
        model_only_ips=max(by_layout.values()),
        model_only_ips_by_layout=by_layout,
        bound_by_numerics=by_numerics,
        stats=cold.stages,
        sequential_ips=sequential,
    )
    return measured, cold, bound
