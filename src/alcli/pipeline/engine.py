"""The stages wired together for one run: their shared state, their threads, the consumer's
end (``next_batch``) and the shutdown (``close``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from alcli.pipeline.control import Control
from alcli.pipeline.decoding import Decode
from alcli.pipeline.infer import Collator, Infer
from alcli.pipeline.ordering import InputOrder, OutputOrder
from alcli.pipeline.reading import Prefetch, ReadWindow
from alcli.pipeline.results import BatchResult, PipelineStats, StageError, StageStats
from alcli.pipeline.threads import TorchThreads

if TYPE_CHECKING:
    import torch

THREAD_PREFIX = "alcli-pipeline"
#: How long close() waits for the threads before abandoning (daemonic) stragglers.
_JOIN_TIMEOUT_S = 5.0
#: How long close() waits for a thread that is inside a ``read`` call (a stuck GET would
#: otherwise hold Ctrl-C for the whole join timeout); it is daemonic and abandoned.
_READ_JOIN_TIMEOUT_S = 1.0


class Engine:
    """The shared state and the stage threads. Holds no reference to the consumer's iterator,
    so dropping the iterator (a ``break``) lets its finaliser stop everything.

    The constructor is long only because it wires the stages together by keyword, one
    argument per line; it holds no logic of its own.
    """

    def __init__(
        self,
        uris: Iterable[str],
        *,
        read: Callable[[str], bytes],
        preprocess: Callable[[bytes], torch.Tensor],
        embed: Callable[[torch.Tensor], np.ndarray],
        batch_size: int,
        io_threads: int,
        decode_threads: int,
        stop: threading.Event | None,
        pin_memory: bool,
        max_inflight_batches: int,
        torch_threads: int | str | None,
        worker_nice: int,
        model_streams: int,
        item_timeout: float | None,
        unreachable_limit: int,
    ) -> None:
        self._control = control = Control(stop)
        self._torch_threads = TorchThreads(torch_threads, model_streams)
        self.stats = PipelineStats(
            stages={
                "prefetch": StageStats(io_threads),
                "preprocess": StageStats(decode_threads),
                "infer": StageStats(model_streams),
            },
            model_streams=model_streams,
        )
        stages = self.stats.stages
        self._window = ReadWindow(
            control,
            uris,
            slots=max_inflight_batches * batch_size,
            item_timeout=item_timeout,
            unreachable_limit=unreachable_limit,
            stuck_limit=max(16, 2 * io_threads),
            spawn_reader=self._spawn_reader,
        )
        self._order = InputOrder(control, self._window)
        self._output = OutputOrder(control, model_streams)
        self._decode = Decode(
            control,
            preprocess,
            order=self._order,
            all_read=lambda: self._window.all_read,
            stats=stages["preprocess"],
            worker_nice=worker_nice,
        )
        self._prefetch = Prefetch(
            control,
            self._window,
            read,
            decode=self._decode,
            order=self._order,
            stats=stages["prefetch"],
            worker_nice=worker_nice,
        )
        infer = Infer(
            control,
            embed,
            batch_size=batch_size,
            collate=Collator(pin_memory),
            torch_threads=self._torch_threads,
            window=self._window,
            decode=self._decode,
            order=self._order,
            output=self._output,
            stats=stages["infer"],
        )
        self._replacements = 0  # I/O threads started in place of stuck ones
        self._threads: list[threading.Thread] = []
        for worker, name, count in (
            (self._prefetch.worker, "prefetch", io_threads),
            (self._decode.worker, "preprocess", decode_threads),
            (infer.worker, "infer", model_streams),
        ):
            self._threads += [self._thread(worker, f"{name}-{i}") for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # a bug in the engine itself: never die silently
                self._control.fail(StageError("pipeline", threading.current_thread().name, error))

        return threading.Thread(target=run, name=f"{THREAD_PREFIX}-{name}", daemon=True)

    def _spawn_reader(self) -> None:
        """With the lock held: an I/O thread in place of one stuck in a read."""
        self._replacements += 1
        thread = self._thread(self._prefetch.worker, f"prefetch-r{self._replacements}")
        self._threads.append(thread)
        thread.start()

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def next_batch(self) -> BatchResult | None:
        """The next batch in order; None at the end or on a stop. Raises a stage's error."""
        with self._control.lock:
            result = self._output.take()
            if result is None:
                self.stats.stopped = not self._output.finished
                if self._output.finished and self._window.cut_error is not None:
                    raise self._window.cut_error
                return None
            self.stats.items_done += len(result.indices) + len(result.failures)
            self.stats.failures += len(result.failures)
            return result

    def close(self) -> None:
        """Stop every stage, drop pending work and wait (bounded) for the threads."""
        with self._control.lock:
            self._control.stop_locked()
            self._decode.clear()
            self._order.clear()
            reading, stuck = self._window.threads_reading()
        started = time.monotonic()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current and thread not in stuck:
                wait = _READ_JOIN_TIMEOUT_S if thread in reading else _JOIN_TIMEOUT_S
                thread.join(max(0.0, started + wait - time.monotonic()))
        if self.stats.ended is None:
            self.stats.ended = time.perf_counter()
        self.stats.torch_threads = self._torch_threads.finish()
