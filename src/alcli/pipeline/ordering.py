"""Input order kept end to end: items are assembled into batches in input order, and the
batches, which several model streams finish in any order, are handed out in that order.

Both are reorder buffers: a dict by position and the position wanted next. Failed items
give their window slot back as soon as they are collected, so a long run of bad items can
never fill the window and stall the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from alcli.pipeline.control import POLL_S, Control
from alcli.pipeline.results import BatchResult, Failure

if TYPE_CHECKING:
    import torch

    from alcli.pipeline.reading import ReadWindow

#: Batches each model stream may have been through the model with, ahead of the one the
#: consumer is storing: one per stream lets two streams overlap each other (and the store)
#: on two cores; anything more is only what a kill during a store would throw away.
OUTPUT_DEPTH = 1

Collected = tuple[list[int], list["torch.Tensor"], list[Failure]]


class InputOrder:
    """Each item's outcome (a tensor or a Failure) by input position, until the model
    streams collect it, strictly in input order. ``arrived`` means: the item wanted next
    changed (its outcome came in, or its bytes are ready for an inline decode)."""

    def __init__(self, control: Control, window: ReadWindow) -> None:
        self._control = control
        self._window = window
        self._results: dict[int, torch.Tensor | Failure] = {}
        self.next_index = 0  # next position the model streams need
        self.arrived = control.condition()

    def put(self, index: int, outcome: torch.Tensor | Failure) -> None:
        """With the lock held."""
        self._results[index] = outcome
        self.nudge(index)

    def nudge(self, index: int) -> None:
        """With the lock held: wake the collector if it waits for ``index``."""
        if index == self.next_index:
            self.arrived.notify()

    def clear(self) -> None:
        self._results.clear()

    def collect_batch(
        self, batch_size: int, while_waiting: Callable[[int], bool]
    ) -> Collected | None:
        """Take the next outcomes in input order until a batch is full or the input ends.

        ``while_waiting(index)`` may make the wanted item arrive (an inline decode, a read
        given up); True when it did something. Returns None when stopping.
        """
        indices: list[int] = []
        tensors: list[torch.Tensor] = []
        failures: list[Failure] = []
        window = self._window
        with self._control.lock:
            while len(tensors) < batch_size:
                while (
                    not self._control.stopping()
                    and self.next_index not in self._results
                    and window.total != self.next_index
                ):
                    if not while_waiting(self.next_index):
                        self.arrived.wait(POLL_S)
                if self._control.stopping():
                    return None
                if self.next_index == window.total:
                    break  # the input is exhausted (or cut short by the ReadWindow)
                outcome = self._results.pop(self.next_index)
                if isinstance(outcome, Failure):
                    failures.append(outcome)
                    window.release_locked(1)
                    window.count_unreachable(outcome)
                else:
                    indices.append(self.next_index)
                    tensors.append(outcome)
                    window.count_unreachable(None)
                self.next_index += 1
        return indices, tensors, failures


class OutputOrder:
    """Finished batches by their place in the output, until the consumer takes them in
    order. ``reserve`` bounds what a kill can lose: a stream waits BEFORE its forward pass
    until its batch is near enough the last one the consumer has stored, so at most
    ``streams + 1`` batches are ever through the model (or in it) and not yet stored. A batch
    counts as stored once the consumer asks for the next one (it stores in between).
    ``moved`` means: a batch was put in, taken out or stored (or every stream finished)."""

    def __init__(self, control: Control, streams: int) -> None:
        self._control = control
        self._streams = streams
        self._done: dict[int, BatchResult] = {}
        self._emitted = 0  # batches the consumer has taken
        self._stored = 0  # batches the consumer is done with (it asked for the next one)
        self._streams_done = 0
        self.finished = False  # every stream saw the end of the input
        # A batch may go through the model this far ahead of the last one stored: one per
        # stream, and one more so a stream that finished its batch need not idle while the
        # consumer stores (measured: embed_throughput --n 1000, local pipeline 341-353 img/s
        # without it, 408-425 with it, 360-404 before any bound).
        self._ahead = OUTPUT_DEPTH * streams + 1
        self.moved = control.condition()

    def reserve(self, order: int) -> bool:
        """With the lock held: wait until batch ``order`` may go through the model; False
        when stopping (the batch is then dropped: it was never embedded)."""
        while order - self._stored >= self._ahead:
            if self._control.stopping():
                return False
            self.moved.wait(POLL_S)
        return True

    def put(self, order: int, result: BatchResult) -> None:
        """With the lock held: add a finished batch (``reserve`` bounded how many wait)."""
        self._done[order] = result
        if order == self._emitted:
            self.moved.notify_all()

    def stream_finished(self) -> None:
        """With the lock held: one model stream saw the end of the input."""
        self._streams_done += 1
        if self._streams_done == self._streams:
            self.finished = True
            self.moved.notify_all()

    def take(self) -> BatchResult | None:
        """With the lock held: the next batch in order, once it is in; None at the end or
        on a stop. Raises the first stage error. Asking means every batch taken before is
        stored, which lets the streams run the next ones."""
        control = self._control
        if self._stored != self._emitted:
            self._stored = self._emitted
            self.moved.notify_all()
        while (
            self._emitted not in self._done
            and not self.finished
            and control.error is None
            and not control.stopping()
        ):
            self.moved.wait(POLL_S)
        if control.error is not None:
            raise control.error
        result = self._done.pop(self._emitted, None)
        if result is not None:
            self._emitted += 1
        return result
