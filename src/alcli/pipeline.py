"""The embedding pipeline: prefetch -> preprocess -> infer, each stage on its own threads.

This is the paper's stage-level parallelism. Reading (network or disk, GIL released) runs on
many I/O threads; decoding (PIL and numpy, GIL mostly released) on a few decode threads; the
model runs on full batches in one or more model threads (streams). While the model works
on batch k, batches k+1.. are being read and decoded, so a run costs about max(stage costs)
per item instead of their sum.

Memory stays bounded whatever the pool size: an item takes a slot of a window of
``max_inflight_batches * batch_size`` when its read starts and gives it back once it is
stacked into a batch (a failed item, as soon as the failure is recorded); a batch per
model stream and at most that many waiting for the consumer come on top. Slots come back
while the model runs, not at the batch boundary, so the refill (reads and decodes, which
need the GIL) overlaps the forward pass instead of delaying the model thread's own
collecting and stacking. Batches
come out in input order. The stages are plain callables, so the same functions can later be
mapped by a distributed engine.

All coordination goes through one lock and a few conditions; every wait also wakes on a
short timeout to notice a stop, so no thread can outlive ``close()`` by more than that, except
one stuck inside a ``read`` call, which is daemonic and abandoned.

Faults while reading. Output order means one read that never returns holds every later
batch, so a read past ``item_timeout`` becomes a failed item when the run waits for it, and a
fresh I/O thread replaces the stuck one. A failure that says the store did not answer
(``StoreUnreachableError``) is still one skipped item, but ``unreachable_limit`` of them in a row
mean the store is gone: the input ends there, what came before is embedded and handed out,
and the consumer gets ``StoreDownError`` instead of a pool marked unreadable item by item.

Model streams. On the CPU several threads run the model side by side, each on its own
batch with its share of torch's threads (``cpu_streams``: two streams of one thread on 2
cores); on a GPU one thread owns the model. The model is shared (a forward pass keeps no
state); batches are collected in input order, one stream at a time, and come out in input
order whichever stream finishes first. Why: one stream on all cores runs OpenMP's per-layer
barriers, so a core taken by anything else (our readers, another process) stalls every
thread of the stream at the next barrier; with a stream per core a preempted stream delays
only itself. Measured on 2 cores, mobilenet_v2 at 112 px, model alone: 2 x 1 threads
251-256 images/s where 1 x 2 gave 220-228 (three rounds of benchmarks/embed_throughput.py).

CPU threads. torch's intra-op thread count is process-wide (``torch.set_num_threads`` from
a model thread changes it for every thread), so the run sets it and restores it at the end.
With one stream, which count is best is not fixed: on an idle 2-core machine two threads
make mobilenet_v2 ~1.5x faster than one, but when other work wants the cores, the barriers
make two threads slower than one (measured down to 0.3-0.5x); ``ThreadTuner`` then measures
one thread against all on the run's own batches (``torch_threads="auto"``). Decoding an
MNIST PNG costs ~0.3 ms of one core against ~9 ms of core time for the model, yet without
care our own decode threads cost far more than that: see ``lower_thread_priority``.

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
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from alcli.errors import ItemError, RunError, StoreDownError, StoreUnreachableError, UsageError

if TYPE_CHECKING:  # torch is imported when a run starts: a warm run never loads it
    import torch

STAGES = ("prefetch", "preprocess", "infer")
THREAD_PREFIX = "alcli-pipeline"
#: How often a waiting thread re-checks an external stop event nobody notified it about.
_POLL_S = 0.1
#: How long close() waits for the threads before abandoning (daemonic) stragglers.
_JOIN_TIMEOUT_S = 5.0
#: How long close() waits for a thread that is inside a ``read`` call (a stuck GET would
#: otherwise hold Ctrl-C for the whole join timeout); it is daemonic and abandoned.
_READ_JOIN_TIMEOUT_S = 1.0
#: Reads in a row that cannot reach the store before the run stops (``StoreDownError``).
UNREACHABLE_LIMIT = 8
#: Finished batches that may wait for the consumer before the model thread pauses.
_OUTPUT_DEPTH = 1
#: Most model streams a CPU run starts by itself (``cpu_streams``).
MAX_CPU_STREAMS = 4


@dataclass(slots=True)
class Failure:
    """One pool item that was skipped, and why."""

    index: int
    uri: str
    reason: str
    unreachable: bool = False  # the store did not answer: nothing is known about the item


@dataclass(slots=True)
class BatchResult:
    """Embeddings for ``indices`` (positions in the input), plus the items skipped meanwhile.

    Every batch has ``batch_size`` rows except the last, which may even have none when the
    last items all failed: it then only carries their failures.
    """

    indices: np.ndarray  # int64 [n]
    embeddings: np.ndarray  # float32 [n, dim]
    failures: list[Failure]


class StageError(RunError):
    """A stage raised something other than ItemError: a bug or a broken model, not a bad item."""

    def __init__(self, stage: str, where: str, error: BaseException) -> None:
        detail = str(error).splitlines()[0] if str(error) else ""
        super().__init__(
            f"{stage} stage failed on {where}: {type(error).__name__}: {detail}".rstrip(": "),
            hint="this is not a bad image; the run was stopped",
        )
        self.stage = stage
        self.where = where
        self.__cause__ = error


@dataclass(slots=True)
class StageStats:
    """Items a stage finished and the seconds its threads spent working on them."""

    threads: int
    items: int = 0
    busy_s: float = 0.0

    def as_dict(self, wall_s: float) -> dict[str, float]:
        return {
            "threads": self.threads,
            "items": self.items,
            "busy_s": round(self.busy_s, 4),
            # items per second over the run: equal across stages when the pipeline flows
            "items_per_s": round(self.items / wall_s, 2) if wall_s > 0 else 0.0,
            # what one busy thread of this stage sustains: the stage's own speed
            "items_per_busy_s": round(self.items / self.busy_s, 2) if self.busy_s > 0 else 0.0,
            # share of the stage's thread-time spent working: near 1.0 marks the bottleneck
            "utilization": round(self.busy_s / (wall_s * self.threads), 3) if wall_s > 0 else 0.0,
        }


@dataclass
class PipelineStats:
    """Per-stage counters plus wall time; ``as_dict()`` is what ``--json`` summaries print."""

    stages: dict[str, StageStats]
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None
    items_done: int = 0
    failures: int = 0
    stopped: bool = False
    torch_threads: int | None = None  # what the model ran with (the tuner's final choice)
    model_streams: int = 1  # model threads running batches side by side

    @property
    def wall_s(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def as_dict(self) -> dict[str, Any]:
        wall = self.wall_s
        return {
            "wall_s": round(wall, 4),
            "items": self.items_done,
            "failures": self.failures,
            "items_per_s": round(self.items_done / wall, 2) if wall > 0 else 0.0,
            "stopped": self.stopped,
            "torch_threads": self.torch_threads,
            "model_streams": self.model_streams,
            "stages": {name: stage.as_dict(wall) for name, stage in self.stages.items()},
        }


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux, where each thread has its
    own; elsewhere the call could hit the whole process, so it does nothing).

    The I/O and decode threads do this: when one of them takes a core from the model's
    OpenMP workers mid-layer, the other worker waits at the layer's barrier, so a slice of
    decoding stalls both cores. At a lower priority they run in the gaps instead. Measured on
    2 cores, 1000 MNIST PNGs: pipeline/model-only 0.72-0.79 at nice 0, 0.89-0.97 at 5-19.
    """
    if increment <= 0 or sys.platform != "linux":
        return
    try:
        thread_id = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + increment))
    except OSError:
        pass  # not allowed here: run at normal priority


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_streams(threads: int | None = None) -> int:
    """Model streams for a CPU run: one per torch thread, at most ``MAX_CPU_STREAMS``.

    Two streams of one thread each beat one stream of two on 2 cores (mobilenet_v2, 112 px,
    batches of 64, model alone: 232-245 against 208-235 images/s, three runs), and more so
    beside other work: a stream that loses its core for a moment delays only itself, where
    one OpenMP thread preempted mid-layer holds every other one at the layer's barrier.
    More streams than cores only add memory; past a few, each gets several threads.
    """
    import torch

    return max(1, min(threads or torch.get_num_threads(), MAX_CPU_STREAMS))


def machine_idle_seconds() -> float | None:
    """Idle CPU seconds of the whole machine since boot, summed over cores (Linux), else None.

    The difference over a batch tells whether a core sat idle while the model ran.
    """
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    if len(fields) < 6 or fields[0] != b"cpu":
        return None
    return (int(fields[4]) + int(fields[5])) / ticks  # idle + iowait


class ThreadTuner:
    """Picks torch's intra-op thread count from the model thread's own batches.

    On an idle 2-core machine two threads run mobilenet_v2 ~1.7x faster than one, but when
    another process wants the cores, OpenMP workers wait on each other at every layer and
    two threads can be several times slower than one. Which case holds changes by the
    minute on a shared machine, so the tuner watches each batch:

    - on all threads, a batch during which this process got less than ``contended_share`` of
      the CPU time those threads could use means another process competes: the next batch
      tries one thread (at most once every ``retry_after`` batches);
    - on one thread, a batch during which the machine left ``idle_share`` of its CPU time
      idle means a core is free: the next batch tries all threads (at most once every
      ``min_gap`` batches); without that signal (not Linux), every ``retry_after`` batches.

    The faster per item (running average, reset when a count comes back) is kept. On an idle
    machine nothing is tried: a trial batch at the slow count costs ~5 % of a 1000-item run.
    """

    def __init__(
        self,
        threads: int,
        *,
        cores: int | None = None,
        retry_after: int = 16,
        min_gap: int = 4,
        contended_share: float = 0.85,
        idle_share: float = 0.25,
    ) -> None:
        self.many = threads
        self.cores = cores or os.cpu_count() or threads
        self.retry_after = retry_after
        self.min_gap = min_gap
        self.contended_share = contended_share
        self.idle_share = idle_share
        self.chosen = threads
        self.seconds_per_item: dict[int, float] = {}  # running estimate per thread count
        self._trial: int | None = None  # a count to try on the next batch
        self._warming_up = True
        self._since_trial = retry_after  # batches since the last trial
        self._last_threads = threads

    def next_threads(self) -> int:
        """The thread count for the next batch."""
        if (
            self._trial is None
            and self.chosen != self.many
            and self._since_trial >= (self.retry_after)
        ):
            self._trial = self.many
        return self._trial if self._trial is not None else self.chosen

    def record(
        self,
        threads: int,
        seconds: float,
        items: int,
        *,
        full: bool,
        cpu_seconds: float,
        idle_seconds: float | None = None,
    ) -> None:
        """One embed call: its wall time, the CPU time this whole process used meanwhile and
        the machine's idle CPU time meanwhile (None when unknown).

        Only full batches are comparable; the first one is not (it builds the kernels).
        """
        self._since_trial += 1
        if self._trial == threads:
            self._trial = None
            self._since_trial = 0
        if not full or items == 0 or seconds <= 0:
            return
        if self._warming_up:
            self._warming_up = False
            return
        sample = seconds / items
        previous = self.seconds_per_item.get(threads)
        if previous is None or threads != self._last_threads:  # a fresh run: old data is stale
            self.seconds_per_item[threads] = sample
        else:
            self.seconds_per_item[threads] = (previous + sample) / 2
        self._last_threads = threads
        self.chosen = min(self.seconds_per_item, key=self.seconds_per_item.__getitem__)
        if self._trial is not None or self.many == 1:
            return
        if threads == self.many:
            contended = cpu_seconds < self.contended_share * seconds * threads
            if contended and self._since_trial >= self.retry_after:
                self._trial = 1
            return
        core_free = idle_seconds is not None and (
            idle_seconds >= self.idle_share * seconds * self.cores
        )
        if core_free and self._since_trial >= self.min_gap:
            self._trial = self.many


def _difference(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


class _Collator:
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


class _Read(NamedTuple):
    """A read in progress: what, since when, on which thread."""

    uri: str
    started: float
    thread: threading.Thread


class _Engine:
    """The shared state and the stage threads. Holds no reference to the consumer's iterator,
    so dropping the iterator (a ``break``) lets its finaliser stop everything."""

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
        import torch

        self._source = iter(uris)
        self._read = read
        self._item_timeout = item_timeout
        self._unreachable_limit = unreachable_limit
        self._io_threads = io_threads
        self._preprocess = preprocess
        self._embed = embed
        self._batch_size = batch_size
        self._window = max_inflight_batches * batch_size
        self._external_stop = stop
        self._collate = _Collator(pin_memory)
        self._worker_nice = worker_nice
        self._torch_threads_before = torch.get_num_threads()
        self._streams = model_streams
        self._tuner: ThreadTuner | None = None
        self._fixed_threads: int | None = None
        if isinstance(torch_threads, int):
            self._fixed_threads = torch_threads
        elif torch_threads == "auto" and model_streams > 1:
            # the thread budget shared out: no stream's OpenMP barrier waits on another's
            self._fixed_threads = max(1, self._torch_threads_before // model_streams)
        elif torch_threads == "auto" and self._torch_threads_before > 1:
            self._tuner = ThreadTuner(self._torch_threads_before)

        self._lock = threading.Lock()
        self._can_read = threading.Condition(self._lock)
        self._can_decode = threading.Condition(self._lock)
        self._can_collect = threading.Condition(self._lock)
        self._output_ready = threading.Condition(self._lock)
        self._output_space = threading.Condition(self._lock)
        self._stop = threading.Event()

        self._next_index = 0  # next position to take from the source
        self._source_done = False
        self._total: int | None = None  # known once the source is exhausted
        self._in_flight = 0  # window slots taken
        self._reads_pending = 0  # taken from the source, not yet read
        self._reading: dict[int, _Read] = {}  # reads in progress, by index
        self._given_up: dict[int, threading.Thread] = {}  # reads past the deadline, left running
        self._replacements = 0  # I/O threads started in place of stuck ones
        self._unreachable_run = 0  # items in a row, in input order, that could not reach the store
        self._cut_error: StoreDownError | None = None  # raised once the items before it are out
        self._decode_heap: list[tuple[int, str, bytes]] = []  # earliest index decoded first
        self._results: dict[int, torch.Tensor | Failure] = {}
        self._collect_index = 0  # next position the infer threads need
        self._collect_turn = threading.Lock()  # one model stream collects at a time, in order
        self._inline_decode = False  # the model streams decode (module docstring)
        self._cpu_cores = _usable_cores()
        self._batches_taken = 0  # batches handed to model streams (their output order)
        self._forwards_done = 0
        self._dim: int | None = None
        self._done_batches: dict[int, BatchResult] = {}  # by order, until the consumer takes them
        self._emitted = 0  # batches the consumer has taken
        self._streams_done = 0
        self._finished = False
        self.error: BaseException | None = None

        self.stats = PipelineStats(
            stages={
                "prefetch": StageStats(io_threads),
                "preprocess": StageStats(decode_threads),
                "infer": StageStats(model_streams),
            }
        )
        self.stats.model_streams = model_streams
        self._threads = [
            *(self._thread(self._prefetch_worker, f"prefetch-{i}") for i in range(io_threads)),
            *(
                self._thread(self._preprocess_worker, f"preprocess-{i}")
                for i in range(decode_threads)
            ),
            *(self._thread(self._infer_worker, f"infer-{i}") for i in range(model_streams)),
        ]
        for thread in self._threads:
            thread.start()

    def _thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        name = f"{THREAD_PREFIX}-{name}"
        return threading.Thread(target=self._guarded(target), name=name, daemon=True)

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # a bug in the engine itself: never die silently
                self._fail(StageError("pipeline", threading.current_thread().name, error))

        return run

    # ------------------------------------------------------------------ shared helpers

    def stopping(self) -> bool:
        return self._stop.is_set() or (
            self._external_stop is not None and self._external_stop.is_set()
        )

    def _wake_all(self) -> None:
        for condition in (
            self._can_read,
            self._can_decode,
            self._can_collect,
            self._output_ready,
            self._output_space,
        ):
            condition.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._fail_locked(error)

    def _fail_locked(self, error: BaseException) -> None:
        """Record the first error and stop every stage. Called with the lock held."""
        if self.error is None:
            self.error = error
        self._stop.set()
        self._wake_all()

    def _release(self, slots: int) -> None:
        """Give window slots back, so the I/O threads may start that many more reads."""
        with self._lock:
            self._in_flight -= slots
            self._can_read.notify(slots)

    def _put_result(self, index: int, outcome: torch.Tensor | Failure) -> None:
        """Called with the lock held."""
        self._results[index] = outcome
        if index == self._collect_index:
            self._can_collect.notify()

    # ------------------------------------------------------------------ stages

    def _prefetch_worker(self) -> None:
        lower_thread_priority(self._worker_nice)
        stats = self.stats.stages["prefetch"]
        while True:
            with self._lock:
                while (
                    not self.stopping()
                    and not self._source_done
                    and self._in_flight >= self._window
                ):
                    self._can_read.wait(_POLL_S)
                if self.stopping() or self._source_done:
                    return
                index = self._next_index
                try:
                    uri = next(self._source)
                except StopIteration:
                    self._source_done = True
                    self._total = index
                    self._wake_all()
                    return
                except Exception as error:
                    self._fail_locked(StageError("prefetch", f"the item list at {index}", error))
                    return
                self._next_index += 1
                self._in_flight += 1
                self._reads_pending += 1
                self._reading[index] = _Read(uri, time.monotonic(), threading.current_thread())
            started = time.perf_counter()
            outcome: bytes | Failure
            try:
                outcome = self._read(uri)
            except ItemError as error:
                outcome = Failure(
                    index, uri, error.reason, isinstance(error, StoreUnreachableError)
                )
            except BaseException as error:
                self._fail(StageError("prefetch", f"item {index} ({uri})", error))
                return
            busy = time.perf_counter() - started
            with self._lock:
                if self._given_up.pop(index, None) is not None:
                    return  # recorded as timed out; another thread took this one's place
                del self._reading[index]
                stats.items += 1
                stats.busy_s += busy
                self._reads_pending -= 1
                if isinstance(outcome, Failure):
                    self._put_result(index, outcome)
                else:
                    heapq.heappush(self._decode_heap, (index, uri, outcome))
                    self._can_decode.notify()
                    if index == self._collect_index:
                        self._can_collect.notify()  # an inline-decoding model thread waits
                if self._source_done and self._reads_pending == 0:
                    self._can_decode.notify_all()  # idle decoders may now exit

    def _preprocess_worker(self) -> None:
        lower_thread_priority(self._worker_nice)
        stats = self.stats.stages["preprocess"]
        while True:
            with self._lock:
                while not self.stopping() and (
                    self._inline_decode
                    or (
                        not self._decode_heap
                        and not (self._source_done and self._reads_pending == 0)
                    )
                ):
                    self._can_decode.wait(_POLL_S)
                if self.stopping() or not self._decode_heap:
                    return
                index, uri, data = heapq.heappop(self._decode_heap)
            outcome, busy = self._decode(index, uri, data)
            del data
            with self._lock:
                if outcome is None:
                    return
                stats.items += 1
                stats.busy_s += busy
                self._put_result(index, outcome)

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
            self._fail(StageError("preprocess", f"item {index} ({uri})", error))
            return None, 0.0
        return outcome, time.perf_counter() - started

    def _decode_inline(self) -> bool:
        """With the lock held: decode the item the collector waits for, if it is read."""
        heap = self._decode_heap
        if not (self._inline_decode and heap and heap[0][0] == self._collect_index):
            return False
        index, uri, data = heapq.heappop(heap)
        self._lock.release()
        try:
            outcome, busy = self._decode(index, uri, data)
            del data
        finally:
            self._lock.acquire()
        if outcome is not None:
            stats = self.stats.stages["preprocess"]
            stats.items += 1
            stats.busy_s += busy
            self._put_result(index, outcome)
        return True

    def _collect_batch(self) -> tuple[list[int], list[torch.Tensor], list[Failure]] | None:
        """Take the next results in input order until a batch is full or the input ends.

        Returns None when stopping. Failed items free their window slot at once, so a long run
        of bad items can never fill the window and stall the pipeline.
        """
        indices: list[int] = []
        tensors: list[torch.Tensor] = []
        failures: list[Failure] = []
        with self._lock:
            while len(tensors) < self._batch_size:
                while (
                    not self.stopping()
                    and self._collect_index not in self._results
                    and self._total != self._collect_index
                ):
                    if not self._decode_inline() and not self._give_up_stuck_read():
                        self._can_collect.wait(_POLL_S)
                if self.stopping():
                    return None
                if self._collect_index == self._total:
                    break  # the input is exhausted (or cut short: see _count_unreachable)
                outcome = self._results.pop(self._collect_index)
                if isinstance(outcome, Failure):
                    failures.append(outcome)
                    self._in_flight -= 1
                    self._can_read.notify()
                    self._count_unreachable(outcome)
                else:
                    indices.append(self._collect_index)
                    tensors.append(outcome)
                    self._unreachable_run = 0
                self._collect_index += 1
        return indices, tensors, failures

    def _give_up_stuck_read(self) -> bool:
        """With the lock held: if the read of the item the collector waits for is past the
        item deadline, record it as timed out and start an I/O thread in its place.

        A thread blocked in a read cannot be interrupted; it is daemonic, left to finish,
        and its result dropped. Output is in input order, so without this one stuck GET
        holds every later batch. True when a failure was recorded.
        """
        index = self._collect_index
        read = self._reading.get(index)
        timeout = self._item_timeout
        if read is None or timeout is None or time.monotonic() - read.started < timeout:
            return False
        del self._reading[index]
        self._given_up[index] = read.thread
        self._reads_pending -= 1
        reason = StoreUnreachableError.timed_out(timeout).reason
        self._put_result(index, Failure(index, read.uri, reason, unreachable=True))
        if len(self._given_up) > max(16, 2 * self._io_threads):  # bounded, like the window
            stuck = len(self._given_up)
            self._end_input_here(StoreDownError(f"{stuck} reads are stuck past {timeout:g} s"))
            return True
        self._replacements += 1
        thread = self._thread(self._prefetch_worker, f"prefetch-r{self._replacements}")
        self._threads.append(thread)
        thread.start()
        return True

    def _count_unreachable(self, failure: Failure) -> None:
        """With the lock held, in input order: after ``unreachable_limit`` items in a row that
        could not reach the store, end the input here, so what came before is embedded and
        handed out, then raise ``StoreDownError``, instead of marking the rest of the pool
        unreadable."""
        if not failure.unreachable:
            self._unreachable_run = 0
            return
        self._unreachable_run += 1
        if self._unreachable_run < self._unreachable_limit or self._cut_error is not None:
            return
        self._end_input_here(
            StoreDownError(
                f"the store stopped answering: {self._unreachable_run} items in a row failed "
                f"(last: {failure.uri}: {failure.reason})"
            )
        )

    def _end_input_here(self, error: StoreDownError) -> None:
        """With the lock held: the input ends after the item being collected; once every
        batch before it is out, the consumer gets ``error``."""
        if self._cut_error is None:
            self._cut_error = error
        self._total = min(self._total or self._collect_index + 1, self._collect_index + 1)
        self._source_done = True
        self._wake_all()

    def _take_batch(
        self,
    ) -> tuple[int, tuple[list[int], list[torch.Tensor], list[Failure]]] | None:
        """The next batch in input order and its place in the output; None when stopping.

        One stream collects at a time (items are taken in order), the others run forward
        passes meanwhile. Whether the stream decodes the batch itself is decided here.
        """
        import torch

        while not self._collect_turn.acquire(timeout=_POLL_S):
            if self.stopping():
                return None
        try:
            with self._lock:  # decide who decodes the next batch (module docstring)
                inline = (
                    self._forwards_done > 0
                    and not self._collate.pin_memory
                    and self._streams * torch.get_num_threads() >= self._cpu_cores
                )
                if inline != self._inline_decode:
                    self._inline_decode = inline
                    self._can_decode.notify_all()
            collected = self._collect_batch()
            if collected is None:
                return None
            order = self._batches_taken
            if collected[0] or collected[2]:
                self._batches_taken += 1
            return order, collected
        finally:
            self._collect_turn.release()

    def _infer_worker(self) -> None:
        import torch

        if self._fixed_threads is not None:
            torch.set_num_threads(self._fixed_threads)
        stats = self.stats.stages["infer"]
        # a finished batch may wait this far ahead of the one the consumer takes next
        ahead = _OUTPUT_DEPTH + self._streams - 1
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            order, (indices, tensors, failures) = taken
            if not indices and not failures:
                break
            if tensors:
                where = f"items {indices[0]}..{indices[-1]}"
                if self._tuner is not None:
                    threads = self._tuner.next_threads()
                    if threads != torch.get_num_threads():
                        torch.set_num_threads(threads)
                started, cpu_started = time.perf_counter(), time.process_time()
                idle_started = machine_idle_seconds() if self._tuner is not None else None
                try:
                    batch = self._collate(tensors)
                    del tensors
                    self._release(len(indices))
                    embeddings = np.asarray(self._embed(batch), dtype=np.float32)
                    del batch
                except BaseException as error:
                    self._fail(StageError("infer", where, error))
                    return
                busy = time.perf_counter() - started
                if self._tuner is not None:
                    self._tuner.record(
                        threads,
                        busy,
                        len(indices),
                        full=len(indices) == self._batch_size,
                        cpu_seconds=time.process_time() - cpu_started,
                        idle_seconds=_difference(machine_idle_seconds(), idle_started),
                    )
                if embeddings.ndim != 2 or embeddings.shape[0] != len(indices):
                    shape = tuple(embeddings.shape)
                    bad = ValueError(f"embed returned shape {shape} for {len(indices)} images")
                    self._fail(StageError("infer", where, bad))
                    return
            else:
                busy = 0.0
                embeddings = np.empty((0, self._dim or 0), dtype=np.float32)
            result = BatchResult(np.asarray(indices, dtype=np.int64), embeddings, failures)
            with self._lock:
                if indices:
                    self._forwards_done += 1
                    self._dim = embeddings.shape[1]
                stats.items += len(indices)
                stats.busy_s += busy
                while not self.stopping() and order - self._emitted >= ahead:
                    self._output_space.wait(_POLL_S)
                self._done_batches[order] = result  # on a stop too: the consumer may take it
                if order == self._emitted:
                    self._output_ready.notify()
                if self.stopping():
                    return
        with self._lock:
            self._streams_done += 1
            if self._streams_done == self._streams:
                self._finished = True
                self._output_ready.notify_all()

    # ------------------------------------------------------------------ consumer side

    def next_batch(self) -> BatchResult | None:
        """The next batch in order; None at the end or on a stop. Raises a stage's error."""
        with self._lock:
            while (
                self._emitted not in self._done_batches
                and not self._finished
                and self.error is None
                and not self.stopping()
            ):
                self._output_ready.wait(_POLL_S)
            if self.error is not None:
                raise self.error
            result = self._done_batches.pop(self._emitted, None)
            if result is None:
                self.stats.stopped = not self._finished
                if self._finished and self._cut_error is not None:
                    raise self._cut_error
                return None
            self._emitted += 1
            self._output_space.notify_all()
            self.stats.items_done += len(result.indices) + len(result.failures)
            self.stats.failures += len(result.failures)
            return result

    def close(self) -> None:
        """Stop every stage, drop pending work and wait (bounded) for the threads."""
        with self._lock:
            self._stop.set()
            self._decode_heap.clear()
            self._results.clear()
            self._wake_all()
            reading = {read.thread for read in self._reading.values()}
            stuck = set(self._given_up.values())
        started = time.monotonic()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current and thread not in stuck:
                wait = _READ_JOIN_TIMEOUT_S if thread in reading else _JOIN_TIMEOUT_S
                thread.join(max(0.0, started + wait - time.monotonic()))
        if self.stats.ended is None:
            self.stats.ended = time.perf_counter()
        if self._tuner is not None:
            self.stats.torch_threads = self._tuner.chosen
        else:
            self.stats.torch_threads = self._fixed_threads or self._torch_threads_before
        if self._tuner is not None or self._fixed_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads_before)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)


class PipelineRun:
    """The consumer's handle: iterate for BatchResults, read ``.stats``, ``close()`` any time.

    Usable as a context manager. Dropping it (for example, breaking out of a ``for`` loop over
    it) also stops the pipeline, because the stage threads do not reference it.
    """

    def __init__(self, engine: _Engine, progress: Callable[[int], None] | None) -> None:
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


class CtrlCStops:
    """While a run is consumed on the main thread, the first Ctrl-C sets ``stop`` instead of
    raising KeyboardInterrupt; a second one raises at once.

    Why: Python raises KeyboardInterrupt at whatever bytecode the main thread is running,
    for instance inside ``threading.Condition.wait`` after it woke but before it took its
    lock back (the ``with`` around it then releases a lock it does not hold: "release
    unlocked lock", or another thread's), or between writing a batch and recording it. A
    stop ends the run within ``_POLL_S`` at a batch boundary, the batches already finished
    are still handed out, and the caller raises KeyboardInterrupt from one known place once
    they are saved (``interrupted`` says whether to). Does nothing off the main thread, or
    when SIGINT is not Python's default handler: ignored (a background job) or the
    application's own.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> CtrlCStops:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.stop.set()

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


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
    """
    for label, value in (
        ("batch size", batch_size),
        ("I/O threads", io_threads),
        ("decode threads", decode_threads),
        ("max in-flight batches", max_inflight_batches),
        ("unreachable limit", unreachable_limit),
    ):
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
    engine = _Engine(
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
