"""The infer stage: model streams that each collect the next batch in input order, stack it
and run the model on it (on the model's own thread: ``Collator``).

Several streams run side by side on the CPU (see ``alcli.pipeline.threads``); one collects
at a time, so batches are taken in input order, and each batch keeps its place in the
output whichever stream finishes first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from alcli.pipeline.control import POLL_S, Control
from alcli.pipeline.results import BatchResult, StageError, StageStats

if TYPE_CHECKING:
    import torch

    from alcli.pipeline.decoding import Decode
    from alcli.pipeline.ordering import Collected, InputOrder, OutputOrder
    from alcli.pipeline.reading import ReadWindow
    from alcli.pipeline.threads import TorchThreads


class Collator:
    """Stacks CHW tensors into an NCHW batch laid out channels_last (NHWC in memory).

    channels_last is what the backbone runs in; stacking straight into it costs one copy,
    where stacking NCHW and converting costs two (measured 1.7 ms against 7.2 ms for 64
    images of 112 px), on the model's own thread. When feeding a GPU the batch goes into a
    reused pinned buffer, so the host-to-device copy can be asynchronous.
    """

    def __init__(self, pin_memory: bool) -> None:
        import torch

        self.pin_memory = pin_memory and torch.cuda.is_available()
        self._buffer: torch.Tensor | None = None

    def __call__(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        import torch

        if tensors[0].dim() != 3:  # not images: plain stacking
            return torch.stack(tensors)
        hwc = [tensor.permute(1, 2, 0) for tensor in tensors]
        if not self.pin_memory:
            return torch.stack(hwc).permute(0, 3, 1, 2)
        shape = (len(hwc), *hwc[0].shape)
        buffer = self._buffer
        if buffer is None or buffer.shape[1:] != shape[1:] or buffer.shape[0] < shape[0]:
            buffer = self._buffer = torch.empty(shape, dtype=hwc[0].dtype).pin_memory()
        # embed() returns host arrays, so the previous non_blocking copy has completed.
        return torch.stack(hwc, out=buffer[: shape[0]]).permute(0, 3, 1, 2)


class Infer:
    """The model streams' job: collect a batch in order, run the model, hand the result on."""

    def __init__(
        self,
        control: Control,
        embed: Callable[[torch.Tensor], np.ndarray],
        *,
        batch_size: int,
        collate: Collator,
        torch_threads: TorchThreads,
        window: ReadWindow,
        decode: Decode,
        order: InputOrder,
        output: OutputOrder,
        stats: StageStats,
    ) -> None:
        self._control = control
        self._embed = embed
        self._batch_size = batch_size
        self._collate = collate
        self._torch_threads = torch_threads
        self._window = window
        self._decode = decode
        self._order = order
        self._output = output
        self._stats = stats
        self._collect_turn = threading.Lock()  # one model stream collects at a time, in order
        self._batches_taken = 0  # batches handed to model streams (their output order)
        self._forwards_done = 0
        self._dim: int | None = None

    def worker(self) -> None:
        self._torch_threads.start_stream()
        control = self._control
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            order, (indices, tensors, failures) = taken
            if not indices and not failures:
                break
            with control.lock:  # before the forward pass: what a kill can lose stays bounded
                if not self._output.reserve(order):
                    return
            if tensors:
                forward = self._forward(indices, tensors)
                if forward is None:
                    return
                embeddings, busy = forward
            else:
                busy = 0.0
                embeddings = np.empty((0, self._dim or 0), dtype=np.float32)
            result = BatchResult(np.asarray(indices, dtype=np.int64), embeddings, failures)
            with control.lock:
                if indices:
                    self._forwards_done += 1
                    self._dim = embeddings.shape[1]
                self._stats.add(len(indices), busy)
                self._output.put(order, result)  # on a stop too: the consumer may take it
                if control.stopping():
                    return
        with control.lock:
            self._output.stream_finished()

    def _take_batch(self) -> tuple[int, Collected] | None:
        """The next batch in input order and its place in the output; None when stopping.

        One stream collects at a time (items are taken in order), the others run forward
        passes meanwhile. Whether the stream decodes the batch itself is decided here.
        """
        control = self._control
        while not self._collect_turn.acquire(timeout=POLL_S):
            if control.stopping():
                return None
        try:
            with control.lock:  # decide who decodes the next batch (alcli.pipeline.decoding)
                self._decode.set_inline(
                    self._forwards_done > 0
                    and not self._collate.pin_memory
                    and self._torch_threads.streams_fill_cores()
                )
            collected = self._order.collect_batch(self._batch_size, self._while_waiting)
            if collected is None:
                return None
            order = self._batches_taken
            if collected[0] or collected[2]:
                self._batches_taken += 1
            return order, collected
        finally:
            self._collect_turn.release()

    def _while_waiting(self, index: int) -> bool:
        """With the lock held, while the item at ``index`` is not in: decode it inline if
        it is read, or give its read up if it is stuck past the deadline."""
        if self._decode.decode_inline(index):
            return True
        failure = self._window.give_up_stuck(index)
        if failure is None:
            return False
        self._order.put(index, failure)
        return True

    def _forward(
        self, indices: list[int], tensors: list[torch.Tensor]
    ) -> tuple[np.ndarray, float] | None:
        """Stack and embed one batch: (embeddings, seconds); None after a stage error."""
        where = f"items {indices[0]}..{indices[-1]}"
        start = self._torch_threads.batch_started()
        try:
            batch = self._collate(tensors)
            tensors.clear()
            self._window.release(len(indices))
            embeddings = np.asarray(self._embed(batch), dtype=np.float32)
            del batch
        except BaseException as error:
            self._control.fail(StageError("infer", where, error))
            return None
        full = len(indices) == self._batch_size
        busy = self._torch_threads.batch_done(start, len(indices), full=full)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(indices):
            shape = tuple(embeddings.shape)
            bad = ValueError(f"embed returned shape {shape} for {len(indices)} images")
            self._control.fail(StageError("infer", where, bad))
            return None
        return embeddings, busy
