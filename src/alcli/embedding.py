"""``alcli.embed``: the pool's embeddings, computing only what the cache lacks.

Sources give ordered items with cheap cache keys; the cache answers what it has; only the
rest goes through the pipeline, and every batch is stored the moment it comes out, so an
interrupted run keeps what it paid for. A warm run builds no model and reads no image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alcli import __version__
from alcli.cache import EmbeddingCache, manifest_memo_dir
from alcli.errors import StoreDownError, UsageError
from alcli.features import features_fingerprint, features_name, is_features, missing_reason
from alcli.numerics import Numerics, check_runtime_installed, resolve_numerics
from alcli.sources import UNREADABLE_KEY_PREFIX, Item, Pool, is_local, resolve_pool
from alcli.sources.table import HexKeys, ItemTable

if TYPE_CHECKING:  # the pipeline imports torch, which a warm run must not pay for (3-6 s)
    from alcli.pipeline import Failure

#: Failure reasons that depend on the bytes, not on the network: safe to remember, so a warm
#: run does not read a corrupt file again. Read errors are retried on the next run.
_PERMANENT = ("empty file", "not an image", "corrupt image", "decompression bomb")


@dataclass
class EmbedOptions:
    """How to embed: the model and the pipeline's knobs (all part of the CLI too)."""

    model: str = "mobilenet_v2"
    weights: str | None = None
    image_size: int | None = None
    batch_size: int = 64
    io_threads: int | None = None  # None: read_threads() picks by where the pool lives
    decode_threads: int = 2
    device: str = "cpu"
    model_streams: int | None = None  # None: run_pipeline picks (1 on a GPU, cpu_streams())
    item_timeout: float | None = 60.0  # seconds one item's read may take, retries included
    engine: str = "threads"  # "threads": this machine's pipeline; "ray": Ray Data (issue 15)
    ray_address: str | None = None  # None: a local Ray (or the one already joined)
    actors: int | None = None  # Ray actors owning a backbone (None: one per CPU / GPU share)
    gpus_per_actor: float = 0.0
    #: fp32 by default (caches stay warm, picks unchanged); "auto": bf16 on CPUs with native
    #: bf16, fp16 on CUDA (alcli.numerics; why not the default: benchmarks/RESULTS.md, issue 14)
    precision: str = "fp32"
    runtime: str = "torch"  # or "openvino" (an optional extra)

    def numerics(self) -> Numerics:
        """The precision, runtime and device class this run embeds with (``ModelError`` for
        a combination that cannot run); torch-free on the CPU."""
        return resolve_numerics(self.precision, self.runtime, self.model_device())

    def model_device(self) -> str:
        """Where the forward pass runs: Ray actors given GPUs run on CUDA even when the
        driver's ``--device`` is the CPU, and the fingerprint must say so."""
        if self.engine == "ray" and self.gpus_per_actor > 0 and self.device == "cpu":
            return "cuda"
        return self.device

    storage: str = "float32"  # how new rows are stored in the cache: float32 or float16


#: Reads in flight for a pool with remote items: a GET waits ~20-100 ms on the network, so
#: many overlap (16 hide 20 ms of latency at 1,000 items/s).
REMOTE_IO_THREADS = 16
#: For local files: a read is a page-cache copy or one disk request, and every extra thread
#: only competes with the model for the GIL. Measured on 2 cores, 1,000 local MNIST PNGs:
#: pipeline / model alone 0.82-0.84 with 16 readers, 0.90-0.94 with 2.
LOCAL_IO_THREADS = 2


def read_threads(requested: int | None, uris: Sequence[str]) -> int:
    """I/O threads for reading ``uris``: ``requested``, or by where they live when None."""
    if requested is not None:
        return requested
    return LOCAL_IO_THREADS if all(map(is_local, uris)) else REMOTE_IO_THREADS


@dataclass
class EmbedResult:
    """The usable items in pool order and their embeddings (row i is items[i]); both empty
    when the caller did not ask for them (``embed(..., collect=False)``: the counts only);
    with ``collect="rows"`` the embeddings are an ``alcli.rows.CachedRows``, read from the
    cache a block at a time, never gathered."""

    pool: Pool
    items: Sequence[Item]  # a list, or an ``ItemTable`` for a remembered manifest's pool
    embeddings: Any  # np.ndarray, or alcli.rows.CachedRows with collect="rows"
    failures: list[Failure]
    fingerprint: str
    cached: int
    embedded: int
    seconds: float
    stages: dict[str, Any] = field(default_factory=dict)
    dim: int = 0  # the embeddings' width (0: nothing cached, nothing embedded)
    numerics: Numerics = field(default_factory=Numerics)

    @property
    def uris(self) -> Sequence[str]:
        """A list, or a table's lazy URI column (``find`` locates labeled URIs in it)."""
        if isinstance(self.items, ItemTable):
            return self.items.uris
        return [item.uri for item in self.items]

    def summary(self) -> dict[str, Any]:
        """What ``alcli embed --json`` prints."""
        total = len(self.pool.items)
        return {
            "pool": self.pool.spec,
            "items": total,
            "cached": self.cached,
            "embedded": self.embedded,
            "failed": len(self.failures),
            "failures": [{"uri": f.uri, "reason": f.reason} for f in self.failures],
            "duplicates": len(self.pool.duplicates),
            "ignored": self.pool.skipped,  # manifest lines naming no item, unlistable folders
            "dim": self.dim,
            "fingerprint": self.fingerprint,
            "precision": self.numerics.precision,
            "runtime": self.numerics.runtime,
            "device_class": self.numerics.device_class,
            "seconds": round(self.seconds, 4),
            "items_per_s": round(total / self.seconds, 1) if self.seconds > 0 else None,
            "stages": self.stages,
        }


def resolve(
    spec: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    content_hash: bool = False,
    storage_options: dict[str, Any] | None = None,
    stdin: Iterable[str] | None = None,
    inventory_prefix: str | None = None,
) -> Pool:
    """POOL as items, the way ``embed`` sees it: ``resolve_pool`` with the cache folder's
    manifest memo (a million-line inventory is read once). Cheap (a listing, no image read),
    so a caller can check a request against the pool's URIs before anything is embedded."""
    return resolve_pool(
        spec,
        content_hash=content_hash,
        storage_options=storage_options,
        stdin=stdin,
        memo_dir=manifest_memo_dir(cache_dir),
        inventory_prefix=inventory_prefix,
    )


def embed(
    pool: str | Pool,
    *,
    options: EmbedOptions | None = None,
    cache: EmbeddingCache | str | Path | None = None,
    content_hash: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    collect: bool | str = True,
    memory: int | None = None,
) -> EmbedResult:
    """Embed every item of ``pool`` not yet cached; return all usable items' embeddings.

    ``collect=False`` returns the counts only (``alcli embed``): the cache is asked which
    items it has, never for their rows, so memory does not grow with the pool's embeddings.
    """
    start = time.perf_counter()
    opts = options or EmbedOptions()
    store = (
        cache
        if isinstance(cache, EmbeddingCache)
        else EmbeddingCache(cache, storage_dtype=opts.storage)
    )
    if not isinstance(pool, Pool):
        pool = resolve(
            pool,
            cache_dir=store.directory,
            content_hash=content_hash,
            storage_options=storage_options,
        )
    numerics = opts.numerics()
    plan = _Plan.from_cache(pool, store, cached_fingerprint(opts, store.directory), collect)
    plan.memory = memory
    if progress is not None and (plan.cached or plan.failures):
        progress(plan.cached + len(plan.failures))
    stages: dict[str, Any] = {}
    if plan.todo and is_features(opts.model):  # imported features: nothing to compute
        plan.without_features(features_name(opts.model))
    if plan.todo:
        store.check_writable()  # a read-only cache: say so before any image is read
        check_runtime_installed(numerics.runtime)  # likewise a missing optional runtime
        stages = _compute(plan, pool, opts, progress=progress, stop=stop)
        # One in-order segment lets the next warm run map the pool instead of copying it.
        store.compact(plan.fingerprint)
    result = plan.result(pool, seconds=time.perf_counter() - start, stages=stages)
    result.numerics = numerics
    return result


@dataclass
class _Plan:
    """One ``embed`` call's bookkeeping: the items with real keys, what the cache had, what is
    left to compute, and the rows and failures gathered so far (positions are the pool's)."""

    store: EmbeddingCache
    fingerprint: str
    collect: bool | str  # True: gather rows; False: counts only; "rows": a CachedRows reader
    items: Sequence[Item]
    positions: Sequence[int]  # of ``items`` in the pool
    keys: Sequence[str]  # a table's are ``HexKeys``: raw bytes, no str per item
    vectors: np.ndarray  # [len(items), dim], or [len(items), 0] when not collecting
    found: np.ndarray
    dim: int
    failures: list[Failure]
    todo: list[int]  # rows of ``items`` to compute
    cached: int
    located: Any = None  # the CachedRows of ``keys`` as found before computing (collect="rows")
    memory: int | None = None

    @classmethod
    def from_cache(
        cls, pool: Pool, store: EmbeddingCache, fingerprint: str, collect: bool | str
    ) -> _Plan:
        """What the cache has for ``pool``, its remembered failures, and the rest to do."""
        items: Sequence[Item] = pool.items
        positions: Sequence[int] = range(len(items))
        failures: list[Failure] = []
        # A table's keys are raw digests (never an unreadable key): no str per item.
        keys: Sequence[str] = (
            items.keys if isinstance(items, ItemTable) else [item.key for item in items]
        )
        # Items resolving found unreadable are skipped with the reason it gave: their keys
        # name no content, so they never reach the cache, nor the pipeline (which would only
        # fail them again). One C-level search of the joined keys finds whether there are any.
        if not isinstance(keys, HexKeys) and UNREADABLE_KEY_PREFIX in "\n".join(keys):
            items, positions, failures = _without_unreadable(pool)
            keys = [item.key for item in items]
        located = None
        if collect == "rows":  # where each row lives, nothing read: streamed later
            located = store.rows(fingerprint, keys)
            found = located.found
            dim = located.dim
            vectors = np.zeros((len(keys), 0), dtype=np.float32)
        elif collect:
            vectors, found = store.lookup(fingerprint, keys)
            dim = vectors.shape[1]
        else:  # an [n, 0] stand-in: no row is gathered, nor kept as batches come out
            found = store.contains(fingerprint, keys)
            dim = store.stats(fingerprint)[fingerprint]["dim"] or 0
            vectors = np.zeros((len(keys), 0), dtype=np.float32)
        missing = [] if found.all() else [keys[int(i)] for i in np.flatnonzero(~found)]
        known_bad = store.lookup_failures(fingerprint, missing) if missing else {}
        if known_bad:
            from alcli.pipeline import Failure

            failures += [
                Failure(positions[i], items[i].uri, known_bad[k])
                for i, k in enumerate(keys)
                if not found[i] and k in known_bad
            ]
        todo = [int(i) for i in np.flatnonzero(~found) if keys[int(i)] not in known_bad]
        return cls(
            store=store,
            fingerprint=fingerprint,
            collect=collect,
            items=items,
            positions=positions,
            keys=keys,
            vectors=vectors,
            found=found,
            dim=int(dim),
            failures=failures,
            todo=todo,
            cached=int(found.sum()),
            located=located,
        )

    def without_features(self, name: str) -> None:
        """Imported features ``name`` lack the items left to do: each skipped, saying so; none
        found at all is a usage error (a typo in the name, or nothing imported)."""
        from alcli.pipeline import Failure

        if not self.found.any():
            raise UsageError(
                f"no imported features {name!r} for any item of this pool",
                hint=f"import them: alcli embed --from-npy EMB.npy --uris U --fingerprint {name}",
            )
        reason = missing_reason(name)
        self.failures += [Failure(self.positions[i], self.items[i].uri, reason) for i in self.todo]
        self.failures.sort(key=lambda f: f.index)
        self.todo = []

    def widen(self, dim: int) -> None:
        """A width other than the cached one: nothing cached can be used with it."""
        self.dim = dim
        gather = self.collect and self.collect != "rows"
        self.vectors = np.zeros((len(self.keys), dim if gather else 0), dtype=np.float32)
        self.found[:] = False

    def keep(self, batch: Any) -> int:
        """Store one batch's rows and permanent failures before the next one comes; the
        number of rows stored."""
        rows = np.asarray([self.todo[j] for j in batch.indices], dtype=np.int64)
        if len(rows) and self.dim != batch.embeddings.shape[1]:
            self.widen(batch.embeddings.shape[1])
        if len(rows):
            self.store.store(self.fingerprint, [self.keys[r] for r in rows], batch.embeddings)
            if self.collect and self.collect != "rows":
                self.vectors[rows] = batch.embeddings
            self.found[rows] = True
        remember = [f for f in batch.failures if f.reason.startswith(_PERMANENT)]
        if remember:
            self.store.store_failures(
                self.fingerprint,
                [self.keys[self.todo[f.index]] for f in remember],
                [f.reason for f in remember],
            )
        # the pipeline numbers items by their place in ``todo``; failures carry the pool's
        self.failures += [
            dataclasses.replace(f, index=self.positions[self.todo[f.index]]) for f in batch.failures
        ]
        return len(rows)

    def result(self, pool: Pool, *, seconds: float, stages: dict[str, Any]) -> EmbedResult:
        """The usable items in pool order and their rows (none when not collecting)."""
        self.failures.sort(key=lambda f: f.index)
        usable = np.flatnonzero(self.found)
        vectors: Any = self.vectors
        kept: Sequence[Item]
        if self.collect == "rows":
            kept = _take_items(self.items, usable)
            vectors = self._rows(usable)
        elif not self.collect:
            kept, vectors = [], np.empty((0, self.dim), dtype=np.float32)
        elif not self.found.all():
            kept, vectors = _take_items(self.items, usable), _take_rows(vectors, usable)
        else:
            kept = _take_items(self.items, usable)
        return EmbedResult(
            pool=pool,
            items=kept,
            embeddings=vectors,
            failures=self.failures,
            fingerprint=self.fingerprint,
            cached=self.cached,
            embedded=len(usable) - self.cached,
            seconds=seconds,
            stages=stages,
            dim=int(self.dim),
        )

    def _rows(self, usable: np.ndarray) -> Any:
        """The usable items' rows as a ``CachedRows``: the one located before computing when
        nothing was computed, else located again (the new rows, after compaction)."""
        if self.located is not None and self.cached == len(usable):
            located = self.located
            if len(usable) != len(self.keys):
                located = located.subset(usable)
        else:
            located = self.store.rows(self.fingerprint, _take_keys(self.keys, usable))
        return located if self.memory is None else located.with_memory(self.memory)


def _compute(
    plan: _Plan,
    pool: Pool,
    opts: EmbedOptions,
    *,
    progress: Callable[[int], None] | None,
    stop: threading.Event | None,
) -> dict[str, Any]:
    """Run the pipeline over ``plan.todo``, each batch stored as it comes out; the stages'
    stats. Ctrl-C stops at a batch boundary (KeyboardInterrupt once the last batch is
    stored); a dead store stops the run saying how much was saved."""
    if opts.engine == "ray":
        return _compute_ray(plan, pool, opts, progress=progress, stop=stop)
    if opts.engine != "threads":
        raise UsageError(f"unknown engine {opts.engine!r}", hint="use threads or ray")
    from alcli.models import BackboneInBackground
    from alcli.models.runtimes import EXPORT_FOLDER
    from alcli.pipeline import CtrlCStops, StageError, run_pipeline

    # The network builds while the first images are read and decoded; the build starts
    # after the pipeline has read torch's thread count (the build changes it meanwhile).
    backbone = BackboneInBackground(
        opts.model,
        opts.weights,
        opts.image_size,
        device=opts.device,
        precision=opts.precision,
        runtime=opts.runtime,
        export_dir=plan.store.directory / EXPORT_FOLDER,
    )
    uris = [plan.items[i].uri for i in plan.todo]
    timeout = opts.item_timeout or None
    stop = stop if stop is not None else threading.Event()
    ctrl_c = CtrlCStops(stop)  # Ctrl-C: stop at a batch boundary, keep every batch done
    run = run_pipeline(
        uris,
        read=partial(pool.read, timeout=timeout),
        preprocess=backbone.preprocess,
        embed=backbone.embed,
        batch_size=opts.batch_size,
        io_threads=read_threads(opts.io_threads, uris),
        decode_threads=opts.decode_threads,
        stop=stop,
        pin_memory=backbone.device.type == "cuda",
        model_streams=opts.model_streams or "auto",
        item_timeout=timeout,
    )
    backbone.start()
    try:
        with ctrl_c, run as batches:
            _keep_all(plan, batches, progress)
            stages = batches.stats.as_dict()
        if ctrl_c.interrupted:  # raised here, after the last finished batch was stored
            raise KeyboardInterrupt
    except StageError as error:
        # The model could not be built (bad checkpoint, ...): say that, not "infer failed".
        build_error = backbone.failed()
        if build_error is not None and error.stage == "infer":
            raise build_error from None
        raise
    # The build overlaps the first reads and decodes; what it did not hide is the wait.
    stages["model_build"] = {
        "seconds": round(backbone.build_s, 4),
        "waited_s": round(backbone.waited_s, 4),
    }
    if plan.dim == 0:  # nothing cached and nothing embedded: keep the model's width
        plan.widen(backbone.result().dim)
    return stages


def _keep_all(plan: _Plan, batches: Iterable[Any], progress: Callable[[int], None] | None) -> None:
    """Store each batch as it comes out (either engine); a dead store (raised while the next
    batch is awaited) stops the run saying how much this run embedded and saved."""
    saved = 0
    try:
        for batch in batches:
            saved += plan.keep(batch)
            if progress is not None:
                progress(len(batch.indices) + len(batch.failures))
    except StoreDownError as error:  # the run's problem; every batch before it is stored
        raise StoreDownError(
            f"{error.message}; {saved:,} embedded and saved; rerun to continue"
        ) from error


def _compute_ray(
    plan: _Plan,
    pool: Pool,
    opts: EmbedOptions,
    *,
    progress: Callable[[int], None] | None,
    stop: threading.Event | None,
) -> dict[str, Any]:
    """``_compute`` on Ray Data (``pipeline/ray_engine.py``): the same items, the same batches
    stored as they arrive, the same Ctrl-C and dead-store endings; the engine's stats."""
    from alcli.models.runtimes import EXPORT_FOLDER
    from alcli.pipeline import CtrlCStops
    from alcli.pipeline.ray_engine import RayRun, RaySettings

    stop = stop if stop is not None else threading.Event()
    ctrl_c = CtrlCStops(stop)
    run = RayRun(
        [plan.items[i].uri for i in plan.todo],
        model=opts.model,
        weights=opts.weights,
        image_size=opts.image_size,
        device=opts.device,
        precision=opts.precision,
        runtime=opts.runtime,
        export_dir=str(plan.store.directory / EXPORT_FOLDER),
        fingerprint=plan.fingerprint,
        storage_options=pool.storage_options,
        batch_size=opts.batch_size,
        item_timeout=opts.item_timeout or None,
        settings=RaySettings(opts.ray_address, opts.actors, opts.gpus_per_actor),
        stop=stop,
    )
    with ctrl_c, run:
        _keep_all(plan, run, progress)
    if ctrl_c.interrupted:
        raise KeyboardInterrupt
    if plan.dim == 0:  # every item failed: keep the model's width without building it here
        from alcli.models import load_backbone

        plan.widen(load_backbone(opts.model, opts.weights, opts.image_size).dim)
    return {"ray": run.stats}


#: Rows moved per step by ``_take_rows`` (its only temporary).
_TAKE_CHUNK_BYTES = 16 << 20


def _take_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``vectors[rows]`` (``rows`` ascending) without a second [n, D] array: the rows move up
    in place, a chunk at a time, and the top is returned as a view. Row ``rows[j]`` goes to
    place ``j <= rows[j]``, so no step overwrites a row a later step still reads. (One
    remembered bad item used to make a warm run hold the pool's embeddings twice.)"""
    step = max(1, _TAKE_CHUNK_BYTES // max(1, vectors.shape[1] * vectors.itemsize))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        vectors[start : start + len(chunk)] = vectors[chunk]
    return vectors[: len(rows)]


def _take_items(items: Sequence[Item], rows: np.ndarray) -> Sequence[Item]:
    """``items[rows]`` (``rows`` ascending): a table stays a table (no Item per row)."""
    if len(rows) == len(items):
        return items if isinstance(items, ItemTable) else list(items)
    if isinstance(items, ItemTable):
        return items.take(rows)
    return [items[i] for i in rows]


def _take_keys(keys: Sequence[str], rows: np.ndarray) -> Sequence[str]:
    if isinstance(keys, HexKeys):
        return keys if len(rows) == len(keys) else HexKeys(keys.raw[rows])
    return [keys[i] for i in rows]


def _without_unreadable(pool: Pool) -> tuple[list[Item], list[int], list[Failure]]:
    """The items with real cache keys, their positions in the pool, and one failure (with
    the reason resolving gave) for each item it found unreadable."""
    from alcli.pipeline import Failure

    positions = [i for i, item in enumerate(pool.items) if not item.unreadable]
    failures = [
        Failure(i, item.uri, pool.unreadable.get(item.uri, "unreadable"))
        for i, item in enumerate(pool.items)
        if item.unreadable
    ]
    return [pool.items[i] for i in positions], positions, failures


def cached_fingerprint(options: EmbedOptions, directory: Path) -> str:
    """``models.model_fingerprint``, remembered in the cache folder.

    Computing it imports torch and torchvision (3-6 s here, most of a warm ``select``). The
    fingerprint is a pure function of the request below (model, weights, image size, the
    resolved precision, runtime and device class, the torchvision and alcli versions, and a
    checkpoint file's path, size and mtime), so a warm run reads it from
    ``fingerprints.json`` and never imports torch. (fp32/torch/cpu adds no key, so memos
    written before precisions existed still answer.)
    """
    if is_features(options.model):
        return features_fingerprint(features_name(options.model))
    numerics = options.numerics()
    request: dict[str, Any] = {
        "model": options.model,
        "weights": options.weights,
        "image_size": options.image_size,
        "alcli": __version__,
        "torchvision": importlib.metadata.version("torchvision"),
        **({"numerics": numerics.identity()} if numerics.identity() else {}),
    }
    if options.weights and os.path.isfile(options.weights):
        info = os.stat(options.weights)
        request["file"] = [os.path.realpath(options.weights), info.st_size, info.st_mtime_ns]
    memo_key = json.dumps(request, sort_keys=True)
    path = Path(directory) / "fingerprints.json"
    memo: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        memo = json.loads(path.read_text())
    if isinstance(memo, dict) and isinstance(memo.get(memo_key), str):
        return memo[memo_key]
    from alcli.models import model_fingerprint

    fingerprint = model_fingerprint(
        options.model, options.weights, options.image_size, numerics=numerics
    )
    memo = {**(memo if isinstance(memo, dict) else {}), memo_key: fingerprint}
    with contextlib.suppress(OSError):  # a read-only cache still works, only slower
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".fingerprints.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=1))
        tmp.replace(path)
    return fingerprint
