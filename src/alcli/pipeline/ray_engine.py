"""``--engine ray``: the embedding pipeline on Ray Data, for pools past one machine.

The same contract as ``run_pipeline`` for its consumer (``embedding._compute``): iterate for
``BatchResult``s whose ``indices`` and ``failures`` are positions in ``uris``, each stored by
the consumer the moment it arrives. The shape is Ray Data's batch-inference recipe:

- the URIs go in as Arrow blocks of ``batch_size`` rows (a few batches for ``tasks``);
- a remote pool (``split``, ``layout_for``): reading is many small Ray tasks (``read_block``,
  zero CPUs reserved: they wait on the store, so they must not take a core an actor needs),
  each reading its block through the sources' reader (fsspec, the item deadline, item vs
  store failures), several GETs at once; decode + infer is ``map_batches`` over an actor
  pool (``compute=ActorPoolStrategy``, the 2.60 API; ``concurrency=`` is deprecated there),
  each actor owning a backbone for its life;
- a local pool (a read is a page-cache copy) is read where it is embedded: on CPUs by
  ``read_and_embed`` tasks in Ray's reused worker processes, each keeping its backbone
  (``tasks``), on GPUs by the actors (``actors``). That removes most of a cold run's
  start-up (no actor processes importing torch per run, no reading workers ahead of them);
- the driver streams results (``iter_batches``) into the cache as they come, so a killed run
  keeps what was written and a rerun embeds only the rest.

Bad items are rows with a reason, never exceptions (Ray's ``max_errored_blocks=0`` would end
the job on one). Results arrive in completion order, not input order; the cache is keyed, so
order only matters to the unreachable-store rule, which counts failures in a row as they come.
Ray is imported here, lazily, and only here: without it ``--engine ray`` is a usage error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alcli.errors import AlcliError, RunError, StoreDownError, UsageError, one_line
from alcli.pipeline.reading import UNREACHABLE_LIMIT
from alcli.pipeline.results import BatchResult, Failure

#: The one line ``--engine ray`` prints when Ray is not installed.
RAY_MISSING = "--engine ray needs Ray Data, which is not installed: pip install 'alcli[ray]'"

#: GETs in flight per reading task for remote URIs (one task reads one block); local files
#: are page-cache copies and need no overlap.
REMOTE_READS_PER_TASK = 16
LOCAL_READS_PER_TASK = 2

#: Reading tasks in flight per actor: enough blocks read ahead that an actor never waits on
#: the store, few enough that read bytes do not pile up in the object store.
READ_TASKS_PER_ACTOR = 2

#: Batches one ``read_and_embed`` task reads and embeds at most (see ``task_batches``): 16
#: batches of 64 are ~1,000 images, ~3-4 s of one worker's work on this box, against a fixed
#: cost per task of 0.15-0.4 s (session 8's traces; session 10: 4 → 16 saved ~0.4 s a task).
BATCHES_PER_TASK = 16

#: ``read_and_embed`` tasks Ray Data keeps in flight per worker (``tasks`` layout).
TASKS_PER_WORKER = 1

#: Build the input dataset with ``ray.data.from_blocks`` (block metadata computed on the
#: driver) instead of ``from_arrow`` (one remote metadata task per block, waited for before
#: the run is planned).
FROM_BLOCKS = False

#: Blocks ``iter_batches`` fetches ahead of the driver. Its first window waits for this many
#: blocks before handing out the first one (``prefetch_batches_locally``).
PREFETCH_BLOCKS = 2


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide: the cluster's address (None: a local Ray, started on first use,
    or the one this process already joined), actors (None: one per CPU, or per
    ``gpus_per_actor`` share of the GPUs), and GPUs per actor (0: CPU only)."""

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float = 0.0


def import_ray() -> Any:
    """``ray`` with ``ray.data``, or the one-line usage error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster at ``address`` (``auto``, ``ray://host:10001``) or start a local Ray,
    once per process; quiet, no dashboard. A cluster that cannot be reached is a usage error."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    quiet = logging.ERROR  # Ray's start-up notes are not the user's output; errors still are
    try:
        if address:
            ray.init(address=address, logging_level=quiet, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, logging_level=quiet, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        where = f"at {address}" if address else "locally"
        raise UsageError(
            f"cannot start or reach Ray {where}: {one_line(error)}",
            hint="check --ray-address (auto, or ray://HOST:10001)",
        ) from None
    return ray


def cluster_resources(ray: Any) -> dict[str, Any]:
    """What the run had: CPUs, GPUs and live nodes of the cluster."""
    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return {"cpus": total.get("CPU", 0.0), "gpus": total.get("GPU", 0.0), "nodes": nodes}


def actor_count(settings: RaySettings, resources: dict[str, Any]) -> int:
    """``settings.actors``, else one per CPU (or per GPU share when actors take GPUs)."""
    if settings.actors:
        return settings.actors
    if settings.gpus_per_actor > 0:
        gpus = int(resources["gpus"] / settings.gpus_per_actor)
        if gpus < 1:
            raise UsageError(
                f"--gpus-per-actor {settings.gpus_per_actor:g} but the cluster has "
                f"{resources['gpus']:g} GPUs",
                hint="lower --gpus-per-actor or use a cluster with GPUs",
            )
        return gpus
    return max(1, int(resources["cpus"]))


def layout_for(local: bool, gpus_per_actor: float) -> str:
    """How a run's stages are laid out on Ray (see the module docstring):

    - ``tasks``, a local pool on CPUs: one stage of ``read_and_embed`` tasks. They run in
      Ray's pooled worker processes (the ones ``ray.init`` prestarts, reused by the next run
      of the same driver) and each process keeps its backbone, so no actor process has to
      start, import torch and build a model per run, and no reading workers queue for Ray's
      start-up slots ahead of them (session 8: 16-17 s to the first batch became ~9 s cold,
      ~2-4 s on reused workers);
    - ``actors``, a local pool on GPUs: an actor pool that reads its own blocks (a GPU is
      bound to an actor's process for its life, never to a reused task worker);
    - ``split``, a remote pool: reading tasks (many GETs in flight, no CPU reserved) feed
      the actor pool, so the store's latency overlaps the model's work.
    """
    if not local:
        return "split"
    return "actors" if gpus_per_actor > 0 else "tasks"


def task_batches(items: int, batch_size: int, workers: int) -> int:
    """Batches per ``read_and_embed`` task: up to ``BATCHES_PER_TASK`` (Ray Data starts one
    task per block and each task costs its worker a fixed 0.15-0.4 s on this box: dispatch,
    the block's conversions, the idle gap before the next; so a task should be seconds of
    work, keeping that cost under ~10 %), but at least two tasks per worker, so the last ones
    stay balanced on small pools. The task embeds its block one batch at a time, so a larger
    task holds no more image bytes, only more embeddings (1,024 x 1,280 floats = 5 MB)."""
    per_worker = -(-items // (batch_size * workers * 2))
    return max(1, min(BATCHES_PER_TASK, per_worker))


class RayRun:
    """One run's handle: iterate for ``BatchResult``s; ``stats`` once it has ended.

    ``stop`` (an event, or ``close()``) ends the run at the next batch: what arrived is
    handed out and stored, Ray's execution is shut down (in-flight blocks are dropped)."""

    def __init__(
        self,
        uris: Sequence[str],
        *,
        model: str,
        weights: str | None,
        image_size: int | None,
        device: str,
        fingerprint: str,
        storage_options: dict[str, Any],
        precision: str = "fp32",
        runtime: str = "torch",
        export_dir: str | None = None,
        batch_size: int = 64,
        item_timeout: float | None = None,
        settings: RaySettings | None = None,
        stop: threading.Event | None = None,
        unreachable_limit: int = UNREACHABLE_LIMIT,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        self.settings = settings or RaySettings()
        if self.settings.gpus_per_actor < 0:
            raise UsageError("--gpus-per-actor cannot be negative")
        self.uris = list(uris)
        self.batch_size = batch_size
        self.stop = stop if stop is not None else threading.Event()
        self.unreachable_limit = unreachable_limit
        self.stats: dict[str, Any] = {}
        self.layout = ""
        self._model = {
            "model": model,
            "weights": weights,
            "image_size": image_size,
            "device": "cuda" if self.settings.gpus_per_actor > 0 and device == "cpu" else device,
            "fingerprint": fingerprint,
            "precision": precision,
            "runtime": runtime,
            "export_dir": export_dir,
        }
        self._storage_options = storage_options
        self._timeout = item_timeout
        self._ray = connect(self.settings.address)
        self.resources = cluster_resources(self._ray)
        self.actors = actor_count(self.settings, self.resources)

    def close(self) -> None:
        self.stop.set()

    def __enter__(self) -> RayRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _dataset(self) -> Any:
        import pyarrow as pa
        from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

        from alcli.pipeline.ray_workers import EmbedActor, read_and_embed, read_block
        from alcli.sources import is_local

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own bar
        context.print_on_execution_start = False
        # Ray Data's notes (execution finished, idle concurrency) are not the user's concern.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data")
        local = all(map(is_local, self.uris))
        self.layout = layout_for(local, self.settings.gpus_per_actor)
        table = pa.table({"index": np.arange(len(self.uris), dtype=np.int64), "uri": self.uris})
        step = self.batch_size
        rows = step
        if self.layout == "tasks":
            rows *= task_batches(len(self.uris), step, self.actors)
        blocks = [table.slice(start, rows) for start in range(0, len(self.uris), rows)]
        gpus = self.settings.gpus_per_actor
        model = {**self._model, "torch_threads": 1}
        read = {
            "storage_options": self._storage_options,
            "timeout": self._timeout,
            "threads": LOCAL_READS_PER_TASK if local else REMOTE_READS_PER_TASK,
        }
        embedding: dict[str, Any] = {
            "batch_size": step,
            "batch_format": "numpy",
            "num_cpus": 1,
            "num_gpus": gpus if gpus > 0 else None,
            "udf_modifying_row_count": False,
        }
        make = self._ray.data.from_blocks if FROM_BLOCKS else self._ray.data.from_arrow
        source = make(blocks)
        if self.layout == "tasks":
            return source.map_batches(
                read_and_embed,
                compute=TaskPoolStrategy(size=self.actors * TASKS_PER_WORKER),
                fn_kwargs={"model": model, **read, "batch_size": step},
                **embedding,
            )
        if self.layout == "actors":
            return source.map_batches(
                EmbedActor,
                compute=ActorPoolStrategy(size=self.actors),
                fn_constructor_kwargs={**model, "read": read},
                **embedding,
            )
        return source.map_batches(
            read_block,
            batch_size=step,
            batch_format="numpy",
            compute=TaskPoolStrategy(size=READ_TASKS_PER_ACTOR * self.actors),
            num_cpus=0,
            udf_modifying_row_count=False,
            fn_kwargs=read,
        ).map_batches(
            EmbedActor,
            compute=ActorPoolStrategy(size=self.actors),
            fn_constructor_kwargs=model,
            **embedding,
        )

    def __iter__(self) -> Iterator[BatchResult]:
        start = time.perf_counter()
        items = failed = 0
        in_a_row = 0
        first: float | None = None
        first_items = 0
        batches = iter(
            self._dataset().iter_batches(
                batch_size=None, batch_format="numpy", prefetch_batches=PREFETCH_BLOCKS
            )
        )
        try:
            while not self.stop.is_set():
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except self._ray.exceptions.RayError as error:
                    raise _alcli_error(error) from error
                result = _batch_result(batch)
                if first is None:  # actors started (a process, torch, the model) and busy
                    first = time.perf_counter() - start
                    first_items = len(result.indices) + len(result.failures)
                items += len(result.indices)
                failed += len(result.failures)
                for failure in sorted(result.failures, key=lambda f: f.index):
                    in_a_row = in_a_row + 1 if failure.unreachable else 0
                    if in_a_row >= self.unreachable_limit > 0:
                        yield BatchResult(result.indices, result.embeddings, result.failures)
                        raise StoreDownError(
                            f"the store stopped answering: {in_a_row} items in a row failed "
                            f"(last: {failure.uri}: {failure.reason})"
                        )
                if len(result.indices):
                    in_a_row = 0
                yield result
        finally:
            closing = getattr(batches, "close", None)
            if closing is not None:
                closing()  # shuts Ray Data's executor down: in-flight blocks are dropped
            wall = time.perf_counter() - start
            self.stats = {
                "engine": "ray",
                "actors": self.actors,
                "layout": self.layout,
                "gpus_per_actor": self.settings.gpus_per_actor,
                "address": self.settings.address or _gcs_address(self._ray),
                "cluster": self.resources,
                "items": items,
                "failed": failed,
                "wall_s": round(wall, 4),
                "items_per_s": round(items / wall, 1) if wall > 0 else None,
                # the fixed cost of a run (actor processes, imports, model builds), and the
                # rate after it: what a pool large enough to hide that cost gets
                "first_batch_s": round(first, 3) if first is not None else None,
                "after_first_batch_ips": (
                    round((items + failed - first_items) / (wall - first), 1)
                    if first is not None and wall > first
                    else None
                ),
                "driver_pid": os.getpid(),
            }


def _gcs_address(ray: Any) -> str:
    """The cluster this process joined (host:port of its GCS), for the summary."""
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # an older or a client-mode runtime context: not worth failing for
        return "unknown"


def _batch_result(batch: dict[str, np.ndarray]) -> BatchResult:
    reasons = [str(r) for r in batch["reason"]]
    ok = np.asarray([not r for r in reasons], dtype=bool)
    indices = np.asarray(batch["index"], dtype=np.int64)
    embeddings = np.asarray(batch["embedding"], dtype=np.float32)
    failures = [
        Failure(int(indices[i]), str(batch["uri"][i]), reasons[i], bool(batch["unreachable"][i]))
        for i in np.flatnonzero(~ok)
    ]
    return BatchResult(indices[ok], np.ascontiguousarray(embeddings[ok]), failures)


def _alcli_error(error: BaseException) -> AlcliError:
    """A worker's error as alcli's: its own kind when it raised one (a model that cannot be
    built is a ModelError, exit 2), else a run error naming it."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, AlcliError):
            return cause
        inner = getattr(cause, "cause", None)
        cause = inner if isinstance(inner, BaseException) else cause.__cause__
    return RunError(f"the Ray job failed: {one_line(error)}")
