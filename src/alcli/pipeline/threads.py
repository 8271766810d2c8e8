"""The model side's thread policy: how many model streams, how many torch threads each,
and the nice value of the I/O and decode threads beside them.

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
a model thread changes it for every thread), so the run sets it and restores it at the end
(``TorchThreads``). With one stream, which count is best is not fixed: on an idle 2-core
machine two threads make mobilenet_v2 ~1.5x faster than one, but when other work wants the
cores, the barriers make two threads slower than one (measured down to 0.3-0.5x);
``ThreadTuner`` then measures one thread against all on the run's own batches
(``torch_threads="auto"``). Decoding an MNIST PNG costs ~0.3 ms of one core against ~9 ms of
core time for the model, yet without care our own decode threads cost far more than that:
see ``lower_thread_priority``.

``alcli._threads.one_torch_thread`` is a block on one thread; this run's count spans
threads (set by each stream, restored by ``close``), so it is kept here.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import NamedTuple

#: Most model streams a CPU run starts by itself (``cpu_streams``).
MAX_CPU_STREAMS = 4


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


def usable_cores() -> int:
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


class _BatchStart(NamedTuple):
    """Clocks read when a forward pass starts, for the tuner."""

    threads: int
    wall: float
    cpu: float
    idle: float | None


class TorchThreads:
    """torch's intra-op thread count for one run: fixed per stream, tuned, or left alone;
    put back as it was when the run ends (it is process-wide)."""

    def __init__(self, torch_threads: int | str | None, streams: int) -> None:
        import torch

        self.before = torch.get_num_threads()
        self.streams = streams
        self.fixed: int | None = None
        self.tuner: ThreadTuner | None = None
        if isinstance(torch_threads, int):
            self.fixed = torch_threads
        elif torch_threads == "auto" and streams > 1:
            # the thread budget shared out: no stream's OpenMP barrier waits on another's
            self.fixed = max(1, self.before // streams)
        elif torch_threads == "auto" and self.before > 1:
            self.tuner = ThreadTuner(self.before)
        self._cores = usable_cores()

    def start_stream(self) -> None:
        """On a model thread, before its first batch."""
        if self.fixed is not None:
            import torch

            torch.set_num_threads(self.fixed)

    def streams_fill_cores(self) -> bool:
        """True when the model streams' threads already take every usable core."""
        import torch

        return self.streams * torch.get_num_threads() >= self._cores

    def batch_started(self) -> _BatchStart:
        """Set the tuner's count for the next forward pass and start its clocks."""
        import torch

        threads = torch.get_num_threads()
        if self.tuner is not None:
            threads = self.tuner.next_threads()
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
        wall, cpu = time.perf_counter(), time.process_time()
        idle = machine_idle_seconds() if self.tuner is not None else None
        return _BatchStart(threads, wall, cpu, idle)

    def batch_done(self, start: _BatchStart, items: int, *, full: bool) -> float:
        """The forward pass's seconds, recorded for the tuner."""
        busy = time.perf_counter() - start.wall
        if self.tuner is not None:
            self.tuner.record(
                start.threads,
                busy,
                items,
                full=full,
                cpu_seconds=time.process_time() - start.cpu,
                idle_seconds=_difference(machine_idle_seconds(), start.idle),
            )
        return busy

    def finish(self) -> int:
        """Restore torch's count; the count the model ran with (the tuner's final choice)."""
        if self.tuner is None and self.fixed is None:
            return self.before
        import torch

        torch.set_num_threads(self.before)
        return self.tuner.chosen if self.tuner is not None else self.fixed or self.before
