"""The preprocess stage: bytes -> the model's input tensor, earliest item first, on decode
threads or inline on the model streams.

Inline decoding. When the model streams hold a thread per core on the CPU, decoding beside
them can only take cores from the model, so each stream decodes the batch it collects
itself, between its forward passes, as a plain loop would, while the I/O threads keep
reading ahead (decode threads do not even help each other much: PIL's Python glue holds the
GIL; two threads decode 1,000 MNIST PNGs in 0.47 s, one in 0.35 s). Measured on 2 cores,
1,000 MNIST PNGs at 112 px, two streams: 0.87-0.93 of the model alone decoding inline,
0.83-0.91 with decode threads (three runs each). With fewer model threads than cores, on a
GPU, and until the first forward pass is done (the model may still be building), the decode
threads work beside the model.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from alcli.errors import ItemError
from alcli.pipeline.control import POLL_S, Control
from alcli.pipeline.results import Failure, StageError, StageStats
from alcli.pipeline.threads import lower_thread_priority

if TYPE_CHECKING:
    import torch

    from alcli.pipeline.ordering import InputOrder


class Decode:
    """Read items waiting to be decoded (a heap: the earliest index first) and the decode
    threads' job. ``can_decode`` means: bytes came in, the input is all read, or who
    decodes changed."""

    def __init__(
        self,
        control: Control,
        preprocess: Callable[[bytes], torch.Tensor],
        *,
        order: InputOrder,
        all_read: Callable[[], bool],
        stats: StageStats,
        worker_nice: int,
    ) -> None:
        self._control = control
        self._preprocess = preprocess
        self._order = order
        self._all_read = all_read
        self._stats = stats
        self._worker_nice = worker_nice
        self._heap: list[tuple[int, str, bytes]] = []
        self._inline = False  # the model streams decode (module docstring)
        self.can_decode = control.condition()

    def push(self, index: int, uri: str, data: bytes) -> None:
        """With the lock held: an item's bytes, read."""
        heapq.heappush(self._heap, (index, uri, data))
        self.can_decode.notify()
        self._order.nudge(index)  # an inline-decoding model stream may wait for it

    def input_read(self) -> None:
        """With the lock held: every item is read; idle decode threads may exit."""
        self.can_decode.notify_all()

    def set_inline(self, inline: bool) -> None:
        """With the lock held: whether the model streams decode their own batches."""
        if inline != self._inline:
            self._inline = inline
            self.can_decode.notify_all()

    def clear(self) -> None:
        self._heap.clear()

    def worker(self) -> None:
        lower_thread_priority(self._worker_nice)
        control = self._control
        while True:
            with control.lock:
                while not control.stopping() and (
                    self._inline or (not self._heap and not self._all_read())
                ):
                    self.can_decode.wait(POLL_S)
                if control.stopping() or not self._heap:
                    return
                index, uri, data = heapq.heappop(self._heap)
            outcome, busy = self._decode(index, uri, data)
            del data
            with control.lock:
                if outcome is None:
                    return
                self._record(index, outcome, busy)

    def decode_inline(self, index: int) -> bool:
        """With the lock held, on a model stream waiting for ``index``: decode it if it is
        read (the lock is let go meanwhile). True when it was."""
        heap = self._heap
        if not (self._inline and heap and heap[0][0] == index):
            return False
        _, uri, data = heapq.heappop(heap)
        lock = self._control.lock
        lock.release()
        try:
            outcome, busy = self._decode(index, uri, data)
            del data
        finally:
            lock.acquire()
        if outcome is not None:
            self._record(index, outcome, busy)
        return True

    def _record(self, index: int, outcome: torch.Tensor | Failure, busy: float) -> None:
        self._stats.add(1, busy)
        self._order.put(index, outcome)

    def _decode(
        self, index: int, uri: str, data: bytes
    ) -> tuple[torch.Tensor | Failure | None, float]:
        """Preprocess one item, without the lock: (outcome or None after a stage error, s)."""
        started = time.perf_counter()
        try:
            outcome: torch.Tensor | Failure = self._preprocess(data)
        except ItemError as error:
            outcome = Failure(index, uri, error.reason)
        except BaseException as error:
            self._control.fail(StageError("preprocess", f"item {index} ({uri})", error))
            return None, 0.0
        return outcome, time.perf_counter() - started
