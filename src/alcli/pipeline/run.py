"""The entry point: ``run_pipeline`` checks its arguments, starts an ``Engine`` and returns
the consumer's handle, ``PipelineRun``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from alcli.errors import UsageError
from alcli.pipeline.engine import Engine
from alcli.pipeline.reading import UNREACHABLE_LIMIT
from alcli.pipeline.results import BatchResult, PipelineStats
from alcli.pipeline.threads import cpu_streams

if TYPE_CHECKING:
    import torch


class PipelineRun:
    """The consumer's handle: iterate for BatchResults, read ``.stats``, ``close()`` any time.

    Usable as a context manager. Dropping it (for example, breaking out of a ``for`` loop over
    it) also stops the pipeline, because the stage threads do not reference it.
    """

    def __init__(self, engine: Engine, progress: Callable[[int], None] | None) -> None:
        self._engine = engine
        self._progress = progress
        self._closed = False

    @property
    def stats(self) -> PipelineStats:
        return self._engine.stats

    @property
    def stopped(self) -> bool:
        """True when an external stop event ended the run before the input did."""
        return self._engine.stats.stopped

    @property
    def threads(self) -> list[threading.Thread]:
        return self._engine.threads

    def __iter__(self) -> Iterator[BatchResult]:
        return self

    def __next__(self) -> BatchResult:
        if self._closed:
            raise StopIteration
        try:
            result = self._engine.next_batch()
            if result is not None and self._progress is not None:
                self._progress(self._engine.stats.items_done)
        except BaseException:  # a stage's error, KeyboardInterrupt, a failing callback
            self.close()
            raise
        if result is None:
            self.close()
            raise StopIteration
        return result

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.close()

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def run_pipeline(
    uris: Iterable[str],
    *,
    read: Callable[[str], bytes],
    preprocess: Callable[[bytes], torch.Tensor],
    embed: Callable[[torch.Tensor], np.ndarray],
    batch_size: int = 64,
    io_threads: int = 16,
    decode_threads: int = 2,
    stop: threading.Event | None = None,
    pin_memory: bool = False,
    max_inflight_batches: int = 4,
    progress: Callable[[int], None] | None = None,
    torch_threads: int | str | None = "auto",
    worker_nice: int = 10,
    model_streams: int | str = "auto",
    item_timeout: float | None = None,
    unreachable_limit: int = UNREACHABLE_LIMIT,
) -> PipelineRun:
    """Start the stages over ``uris`` and return the handle that yields ordered BatchResults.

    ``uris`` is consumed lazily, under the pipeline's lock: pass a list or a cheap iterator.

    ``read(uri) -> bytes`` and ``preprocess(bytes) -> CHW tensor`` raise ItemError for a bad
    item (recorded as a Failure, skipped); anything else they or ``embed`` raise stops the run
    and is re-raised to the consumer as a StageError. ``stop`` ends the run early (iteration
    just ends, ``.stopped`` is True). ``progress(n)`` gets the number of items done (embedded
    or failed) after each batch.

    ``torch_threads``: torch's intra-op thread count for the model. It is process-wide in
    torch (setting it from the model thread changes it for all), so the run restores the
    previous value when it ends. ``"auto"`` (default) lets ``ThreadTuner`` measure one thread
    against torch's current count on the run's own batches; a number fixes it; None leaves
    torch alone. ``worker_nice``: how much lower the I/O and decode threads run than the
    model thread (Linux; 0 keeps them equal), see ``lower_thread_priority``.

    ``model_streams``: how many threads run the model side by side, each on its own batch
    (the model is shared; its forward pass keeps no state). ``"auto"``: one when feeding a GPU,
    else ``cpu_streams()``. With more than one, ``torch_threads="auto"`` shares torch's thread
    count out between them instead of tuning it, and a number is per stream.

    ``item_timeout``: seconds one read may take (None: no limit). Past it, when the run waits
    for that item, it becomes a Failure "timed out after T s" and a fresh I/O thread replaces
    the stuck one (``read`` should give up by itself too: a thread cannot be interrupted).
    ``unreachable_limit``: after that many items in a row (input order) whose read raised
    ``StoreUnreachableError`` or timed out, the input ends there: every item before it is still
    embedded and handed out, then iteration raises ``StoreDownError``.

    (Long for its docstring and its keyword arguments; the checks are ``_checked_streams``.)
    """
    model_streams = _checked_streams(
        model_streams,
        pin_memory=pin_memory,
        torch_threads=torch_threads,
        item_timeout=item_timeout,
        counts={
            "batch size": batch_size,
            "I/O threads": io_threads,
            "decode threads": decode_threads,
            "max in-flight batches": max_inflight_batches,
            "unreachable limit": unreachable_limit,
        },
    )
    engine = Engine(
        uris,
        read=read,
        preprocess=preprocess,
        embed=embed,
        batch_size=batch_size,
        io_threads=io_threads,
        decode_threads=decode_threads,
        stop=stop,
        pin_memory=pin_memory,
        max_inflight_batches=max_inflight_batches,
        torch_threads=torch_threads,
        worker_nice=worker_nice,
        model_streams=model_streams,
        item_timeout=item_timeout,
        unreachable_limit=unreachable_limit,
    )
    return PipelineRun(engine, progress)


def _checked_streams(
    model_streams: int | str,
    *,
    pin_memory: bool,
    torch_threads: int | str | None,
    item_timeout: float | None,
    counts: dict[str, int],
) -> int:
    """Check ``run_pipeline``'s arguments (UsageError) before a thread starts; the number
    of model streams, ``"auto"`` resolved."""
    for label, value in counts.items():
        if value < 1:
            raise UsageError(f"{label} must be at least 1, got {value}")
    if item_timeout is not None and not item_timeout > 0:
        raise UsageError(f"item timeout must be a positive number of seconds, not {item_timeout}")
    if model_streams == "auto":
        import torch

        model_streams = 1 if pin_memory and torch.cuda.is_available() else cpu_streams()
    if not isinstance(model_streams, int) or model_streams < 1:
        raise UsageError(f"model streams must be a positive number or auto, not {model_streams!r}")
    fixed = isinstance(torch_threads, int) and torch_threads > 0
    if not (fixed or torch_threads in (None, "auto")):
        raise UsageError(f"torch threads must be a positive number or auto, not {torch_threads!r}")
    return model_streams
