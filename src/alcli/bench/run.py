"""``run_bench``: the whole of ``alcli bench``, from a POOL spec to a ``BenchReport``.

Cheap checks first (counts, strategy names, model, weights, device: a typo fails before a long
listing), then the embedding side on the pool's first ``limit`` items (``embedding_side``),
then the strategies at the whole pool's size (``strategy_timing``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alcli.bench.embedding_side import measure_embedding
from alcli.bench.report import BenchReport
from alcli.bench.strategy_timing import DEFAULT_STRATEGIES, strategy_names, time_strategies
from alcli.embedding import EmbedOptions, read_threads
from alcli.errors import UsageError
from alcli.sources import Pool, resolve_pool


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
    names = _checked(opts, limit=limit, rounds=rounds, budget=budget, strategies=strategies)
    note = progress or (lambda message: None)
    pool, list_s = _listed(spec, storage_options, stdin)
    sample = Pool(
        spec=pool.spec,
        items=pool.items[:limit],
        storage_options=pool.storage_options,
        unreadable=pool.unreadable,  # so skipped items keep the reason resolving found
    )
    n = len(sample.items)
    note(f"{n:,} of {len(pool.items):,} items, listed in {list_s:.2f} s")
    # The count embed would pick for these items, fixed so every measurement uses it.
    opts = dataclasses.replace(opts, io_threads=read_threads(opts.io_threads, sample.uris))
    side = measure_embedding(pool, sample, opts, rounds=rounds, note=note)
    dim = int(side.cold.embeddings.shape[1])
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
        embedded=len(side.cold.items),
        failures=[(f.uri, f.reason) for f in side.cold.failures],
        list_s=list_s,
        rounds=side.rounds,
        warm_ips=n / side.warm_s,
        warm_s=side.warm_s,
        options=opts,
        device=side.device,
        image_size=side.image_size,
        bound_items=side.bound_items,
        cores=os.cpu_count() or 1,
        torch_threads_default=side.torch_threads_default,
        sequential_threads=side.sequential_threads,
        load_average=_load_average(),
        strategies=timed,
    )


def _checked(
    options: EmbedOptions,
    *,
    limit: int,
    rounds: int,
    budget: int | None,
    strategies: str | Sequence[str] | None,
) -> list[str]:
    """The strategies' registry names, once every cheap check has passed (each raises a
    ``UsageError`` kind): counts, names (with the registry's did-you-mean), model, device."""
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
    model_fingerprint(options.model, options.weights, options.image_size)
    resolve_device(options.device)
    from alcli.numerics import check_runtime_installed

    check_runtime_installed(options.numerics().runtime)  # and precision/runtime/device
    return names


def _listed(
    spec: str | Pool, storage_options: dict[str, Any] | None, stdin: Iterable[str] | None
) -> tuple[Pool, float]:
    """The pool and the seconds its listing took (next to none for a ``Pool``, listed already)."""
    started = time.perf_counter()
    pool = (
        spec
        if isinstance(spec, Pool)
        else resolve_pool(spec, storage_options=storage_options, stdin=stdin)
    )
    return pool, time.perf_counter() - started


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
