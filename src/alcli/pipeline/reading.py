"""The prefetch stage: items taken from the input into a bounded window and read on I/O
threads, with a deadline per read and a watch on the store.

Memory stays bounded whatever the pool size: an item takes a slot of a window of
``max_inflight_batches * batch_size`` when its read starts and gives it back once it is
stacked into a batch (a failed item, as soon as the failure is recorded); a batch per
model stream and at most that many waiting for the consumer come on top. Slots come back
while the model runs, not at the batch boundary, so the refill (reads and decodes, which
need the GIL) overlaps the forward pass instead of delaying the model thread's own
collecting and stacking.

Faults while reading. Output order means one read that never returns holds every later
batch, so a read past ``item_timeout`` becomes a failed item when the run waits for it, and a
fresh I/O thread replaces the stuck one. A failure that says the store did not answer
(``StoreUnreachableError``) is still one skipped item, but ``unreachable_limit`` of them in a row
mean the store is gone: the input ends there, what came before is embedded and handed out,
and the consumer gets ``StoreDownError`` instead of a pool marked unreadable item by item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from alcli.errors import ItemError, StoreDownError, StoreUnreachableError
from alcli.pipeline.control import POLL_S, Control
from alcli.pipeline.results import Failure, StageError, StageStats
from alcli.pipeline.threads import lower_thread_priority

if TYPE_CHECKING:
    from alcli.pipeline.decoding import Decode
    from alcli.pipeline.ordering import InputOrder

#: Reads in a row that cannot reach the store before the run stops (``StoreDownError``).
UNREACHABLE_LIMIT = 8


class _Read(NamedTuple):
    """A read in progress: what, since when, on which thread."""

    uri: str
    started: float
    thread: threading.Thread


class ReadWindow:
    """What has been taken from the input and where its reads stand. ``can_read`` means:
    a window slot came back (or the input ended)."""

    def __init__(
        self,
        control: Control,
        uris: Iterable[str],
        *,
        slots: int,
        item_timeout: float | None,
        unreachable_limit: int,
        stuck_limit: int,
        spawn_reader: Callable[[], None],
    ) -> None:
        self._control = control
        self._source = iter(uris)
        self._slots = slots
        self._item_timeout = item_timeout
        self._unreachable_limit = unreachable_limit
        self._stuck_limit = stuck_limit  # stuck reads at once before the store counts as down
        self._spawn_reader = spawn_reader
        self._next_index = 0  # next position to take from the source
        self._source_done = False
        self.total: int | None = None  # known once the source is exhausted (or cut)
        self._in_flight = 0  # window slots taken
        self._pending = 0  # taken from the source, not yet read
        self._reading: dict[int, _Read] = {}  # reads in progress, by index
        self._given_up: dict[int, threading.Thread] = {}  # reads past the deadline, left running
        self._unreachable_run = 0  # items in a row, in input order, that could not reach the store
        self.cut_error: StoreDownError | None = None  # raised once the items before it are out
        self.can_read = control.condition()

    @property
    def all_read(self) -> bool:
        """No item is left to read: the source is done and no read is pending."""
        return self._source_done and self._pending == 0

    def take(self) -> tuple[int, str] | None:
        """With the lock held: wait for a free slot and take the next item; None when the
        input is done or the run stops."""
        control = self._control
        while not control.stopping() and not self._source_done and self._in_flight >= self._slots:
            self.can_read.wait(POLL_S)
        if control.stopping() or self._source_done:
            return None
        index = self._next_index
        try:
            uri = next(self._source)
        except StopIteration:
            self._source_done = True
            self.total = index
            control.wake_all()
            return None
        except Exception as error:
            control.fail_locked(StageError("prefetch", f"the item list at {index}", error))
            return None
        self._next_index += 1
        self._in_flight += 1
        self._pending += 1
        self._reading[index] = _Read(uri, time.monotonic(), threading.current_thread())
        return index, uri

    def read_done(self, index: int) -> bool:
        """With the lock held: the read of ``index`` returned; False when it was given up
        (recorded as timed out, another thread took this one's place)."""
        if self._given_up.pop(index, None) is not None:
            return False
        del self._reading[index]
        self._pending -= 1
        return True

    def release(self, slots: int) -> None:
        """Give window slots back, so the I/O threads may start that many more reads."""
        with self._control.lock:
            self.release_locked(slots)

    def release_locked(self, slots: int) -> None:
        self._in_flight -= slots
        self.can_read.notify(slots)

    def give_up_stuck(self, index: int) -> Failure | None:
        """With the lock held: if the read of ``index`` is past the item deadline, give it
        up and start an I/O thread in its place; the failure to record, else None.

        A thread blocked in a read cannot be interrupted; it is daemonic, left to finish,
        and its result dropped. Output is in input order, so without this one stuck GET
        holds every later batch.
        """
        read = self._reading.get(index)
        timeout = self._item_timeout
        if read is None or timeout is None or time.monotonic() - read.started < timeout:
            return None
        del self._reading[index]
        self._given_up[index] = read.thread
        self._pending -= 1
        reason = StoreUnreachableError.timed_out(timeout).reason
        if len(self._given_up) > self._stuck_limit:  # bounded, like the window
            stuck = len(self._given_up)
            self._end_input_after(
                index, StoreDownError(f"{stuck} reads are stuck past {timeout:g} s")
            )
        else:
            self._spawn_reader()
        return Failure(index, read.uri, reason, unreachable=True)

    def count_unreachable(self, failure: Failure | None) -> None:
        """With the lock held, for each item in input order (None: embedded): after
        ``unreachable_limit`` items in a row that could not reach the store, end the input
        here, so what came before is embedded and handed out, then raise
        ``StoreDownError``, instead of marking the rest of the pool unreadable."""
        if failure is None or not failure.unreachable:
            self._unreachable_run = 0
            return
        self._unreachable_run += 1
        if self._unreachable_run < self._unreachable_limit or self.cut_error is not None:
            return
        self._end_input_after(
            failure.index,
            StoreDownError(
                f"the store stopped answering: {self._unreachable_run} items in a row failed "
                f"(last: {failure.uri}: {failure.reason})"
            ),
        )

    def _end_input_after(self, index: int, error: StoreDownError) -> None:
        """With the lock held: the input ends after ``index``; once every batch before it
        is out, the consumer gets ``error``."""
        if self.cut_error is None:
            self.cut_error = error
        self.total = min(self.total or index + 1, index + 1)
        self._source_done = True
        self._control.wake_all()

    def threads_reading(self) -> tuple[set[threading.Thread], set[threading.Thread]]:
        """With the lock held: (threads inside a read, threads given up as stuck)."""
        return {read.thread for read in self._reading.values()}, set(self._given_up.values())


class Prefetch:
    """The I/O threads' job: take an item, read it, hand the bytes (or the failure) on."""

    def __init__(
        self,
        control: Control,
        window: ReadWindow,
        read: Callable[[str], bytes],
        *,
        decode: Decode,
        order: InputOrder,
        stats: StageStats,
        worker_nice: int,
    ) -> None:
        self._control = control
        self._window = window
        self._read = read
        self._decode = decode
        self._order = order
        self._stats = stats
        self._worker_nice = worker_nice

    def worker(self) -> None:
        lower_thread_priority(self._worker_nice)
        control, window = self._control, self._window
        while True:
            with control.lock:
                taken = window.take()
            if taken is None:
                return
            index, uri = taken
            started = time.perf_counter()
            outcome: bytes | Failure
            try:
                outcome = self._read(uri)
            except ItemError as error:
                outcome = Failure(
                    index, uri, error.reason, isinstance(error, StoreUnreachableError)
                )
            except BaseException as error:
                control.fail(StageError("prefetch", f"item {index} ({uri})", error))
                return
            busy = time.perf_counter() - started
            with control.lock:
                if not window.read_done(index):
                    return  # recorded as timed out; another thread took this one's place
                self._stats.add(1, busy)
                if isinstance(outcome, Failure):
                    self._order.put(index, outcome)
                else:
                    self._decode.push(index, uri, outcome)
                if window.all_read:
                    self._decode.input_read()  # idle decoders may now exit
