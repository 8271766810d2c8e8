"""pipeline.py: ordered, bounded, fault-tolerant prefetch -> preprocess -> infer."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from alcli.errors import ItemError, RunError, StoreDownError, StoreUnreachableError, UsageError
from alcli.models import load_backbone
from alcli.pipeline import (
    THREAD_PREFIX,
    BatchResult,
    CtrlCStops,
    PipelineRun,
    StageError,
    ThreadTuner,
    run_pipeline,
)

# Two intra-op threads crawl when other processes share the two cores; one does not.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def wait_for_no_pipeline_threads(timeout: float = 1.0) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout
    while pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return pipeline_threads()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    assert not pipeline_threads(), "a previous test leaked pipeline threads"
    yield
    assert not wait_for_no_pipeline_threads(), "pipeline threads still alive after the test"


def index_read(uri: str) -> bytes:
    return uri.encode()


def index_preprocess(data: bytes) -> torch.Tensor:
    """A 2-value 'image' that carries its own index, so outputs can be checked."""
    index = float(data.decode())
    return torch.tensor([index, -index])


def index_embed(batch: torch.Tensor) -> np.ndarray:
    return batch.numpy().copy()


def index_run(
    n: int,
    *,
    read: Callable[[str], bytes] = index_read,
    preprocess: Callable[[bytes], torch.Tensor] = index_preprocess,
    embed: Callable[[torch.Tensor], np.ndarray] = index_embed,
    **settings: Any,
) -> PipelineRun:
    """``run_pipeline`` over the items "0".."n-1" with the index stages (or any given)."""
    return run_pipeline(
        [str(i) for i in range(n)], read=read, preprocess=preprocess, embed=embed, **settings
    )


def collect(run: PipelineRun) -> list[BatchResult]:
    with run:
        return list(run)


def check_ordered_batches(batches: list[BatchResult], n: int, batch_size: int) -> list[int]:
    """Indices ascend, embeddings belong to their index, every batch but the last is full."""
    seen = [int(i) for batch in batches for i in batch.indices]
    failed = [f.index for batch in batches for f in batch.failures]
    assert seen == sorted(seen)
    assert sorted(seen + failed) == list(range(n))
    for batch in batches[:-1]:
        assert len(batch.indices) == batch_size
    for batch in batches:
        assert batch.embeddings.dtype == np.float32
        np.testing.assert_array_equal(batch.embeddings[:, 0], batch.indices)
    return seen


def test_order_is_input_order_under_random_delays() -> None:
    n, batch_size = 300, 16
    rng = np.random.default_rng(5)
    read_delay = rng.uniform(0, 0.004, n)
    decode_delay = rng.uniform(0, 0.002, n)

    def read(uri: str) -> bytes:
        time.sleep(read_delay[int(uri)])
        return uri.encode()

    def preprocess(data: bytes) -> torch.Tensor:
        time.sleep(decode_delay[int(data.decode())])
        return index_preprocess(data)

    run = run_pipeline(
        (str(i) for i in range(n)),  # any iterable, not only a list
        read=read,
        preprocess=preprocess,
        embed=index_embed,
        batch_size=batch_size,
        io_threads=8,
        decode_threads=3,
    )
    batches = collect(run)
    assert check_ordered_batches(batches, n, batch_size) == list(range(n))
    assert len(batches) == -(-n // batch_size)


def test_bad_items_are_skipped_with_reasons_without_holes(
    png_pool: Callable[..., list[Path]], broken_images: Callable[..., dict[str, Path]]
) -> None:
    good = png_pool(10, size=20)
    broken = broken_images()
    missing = good[0].parent / "gone.png"
    uris = [str(p) for p in good[:3]] + [str(broken["corrupt"]), str(missing)]
    uris += [str(p) for p in good[3:7]] + [str(broken["empty"]), str(broken["text"])]
    uris += [str(p) for p in good[7:]]
    backbone = load_backbone("shufflenet_v2_x0_5", weights="none", image_size=32)

    def read(uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise ItemError("missing") from None

    batches = collect(
        run_pipeline(
            uris, read=read, preprocess=backbone.preprocess, embed=backbone.embed, batch_size=4
        )
    )
    reasons = {f.uri: f.reason for batch in batches for f in batch.failures}
    assert reasons.pop(str(missing)) == "missing"
    assert reasons.pop(str(broken["empty"])) == "empty file"
    assert reasons.pop(str(broken["text"])) == "not an image"
    assert reasons.pop(str(broken["corrupt"])).startswith("corrupt image: ")
    assert not reasons
    assert [len(b.indices) for b in batches] == [4, 4, 2]  # full batches, no holes
    indices = np.concatenate([b.indices for b in batches])
    assert [uris[i] for i in indices] == [str(p) for p in good]
    embeddings = np.concatenate([b.embeddings for b in batches])
    direct = backbone.embed(torch.stack([backbone.preprocess(p.read_bytes()) for p in good]))
    np.testing.assert_allclose(embeddings, direct, rtol=1e-4, atol=1e-5)


def test_all_items_failing_still_reports_each_failure() -> None:
    def read(uri: str) -> bytes:
        raise ItemError(f"unreadable {uri}")

    batches = collect(
        run_pipeline([str(i) for i in range(7)], read=read, preprocess=index_preprocess,
                     embed=index_embed, batch_size=3, max_inflight_batches=1)
    )  # fmt: skip
    assert len(batches) == 1
    assert batches[0].embeddings.shape[0] == 0
    assert [(f.index, f.reason) for f in batches[0].failures] == [
        (i, f"unreadable {i}") for i in range(7)
    ]


def test_empty_input_yields_nothing() -> None:
    run = run_pipeline([], read=index_read, preprocess=index_preprocess, embed=index_embed)
    assert collect(run) == []
    assert run.stats.as_dict()["items"] == 0


@pytest.mark.parametrize("stage", ["prefetch", "preprocess", "infer"])
def test_a_bug_in_any_stage_is_re_raised_in_the_consumer(stage: str) -> None:
    def read(uri: str) -> bytes:
        if stage == "prefetch" and uri == "37":
            raise KeyError("bug in read")
        return index_read(uri)

    def preprocess(data: bytes) -> torch.Tensor:
        if stage == "preprocess" and data == b"37":
            _ = 1 / 0
        return index_preprocess(data)

    def embed(batch: torch.Tensor) -> np.ndarray:
        if stage == "infer" and 37 in batch[:, 0].tolist():
            raise RuntimeError("model exploded")
        return index_embed(batch)

    run = run_pipeline(
        [str(i) for i in range(200)], read=read, preprocess=preprocess, embed=embed, batch_size=8
    )
    with pytest.raises(StageError) as caught:
        collect(run)
    error = caught.value
    assert isinstance(error, RunError)
    assert error.stage == stage
    where = "items 32..39" if stage == "infer" else "item 37 (37)"
    assert where in str(error)
    expected = {"prefetch": KeyError, "preprocess": ZeroDivisionError, "infer": RuntimeError}
    assert isinstance(error.__cause__, expected[stage])
    assert not wait_for_no_pipeline_threads()


def slow_read(uri: str) -> bytes:
    time.sleep(0.01)
    return uri.encode()


def test_breaking_out_of_the_loop_stops_every_thread() -> None:
    started = time.monotonic()
    for number, _batch in enumerate(
        index_run(
            100_000,
            read=slow_read,
            batch_size=8,
        )
    ):
        assert pipeline_threads()
        if number == 2:
            break
    assert not wait_for_no_pipeline_threads(1.0)
    assert time.monotonic() - started < 10


def test_close_mid_stream_cancels_pending_work() -> None:
    reads = []

    def counted_read(uri: str) -> bytes:
        reads.append(uri)
        return slow_read(uri)

    run = index_run(
        100_000,
        read=counted_read,
        batch_size=8,
    )
    next(run)
    closing = time.monotonic()
    run.close()
    assert time.monotonic() - closing < 1.0
    assert not pipeline_threads()
    done = len(reads)
    time.sleep(0.1)
    assert len(reads) == done < 1000  # nothing more is read once closed
    with pytest.raises(StopIteration):
        next(run)


def test_stop_event_ends_the_iteration_early() -> None:
    stop = threading.Event()
    run = index_run(
        100_000,
        read=slow_read,
        batch_size=8,
        stop=stop,
    )
    received = 0
    with run:
        for batch in run:
            received += len(batch.indices)
            stop.set()
    assert run.stopped
    assert 8 <= received < 100
    assert run.stats.as_dict()["stopped"] is True


@pytest.fixture
def sigint_delivered(python_sigint: None) -> threading.Event:
    """An event set when SIGINT's handler has run (then KeyboardInterrupt, as Python's).

    ``python_sigint`` first: ``_thread.interrupt_main()`` does nothing when SIGINT is
    ignored, as a suite started in the background inherits it; that is how this test once
    read all its 100,000 items ("DID NOT RAISE", ~2 minutes) in a suite that passed alone.
    """
    delivered = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        delivered.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)  # python_sigint puts the previous one back
    return delivered


def interrupting_read(
    at: int, delivered: threading.Event, after: threading.Event | None = None
) -> Callable[[str], bytes]:
    """A read that sends Ctrl-C to the main thread when item ``at`` is read (once ``after``
    is set, if given), and holds every later item until it was delivered: the run cannot
    end before the interrupt lands."""

    def read(uri: str) -> bytes:
        if int(uri) == at:
            if after is not None:
                after.wait(30)
            _thread.interrupt_main()  # what Ctrl-C does to the main thread
        elif int(uri) > at:
            delivered.wait(30)  # bounded: a lost interrupt fails the test, it does not hang
        return index_read(uri)

    return read


def test_keyboard_interrupt_in_the_consumer_shuts_down(sigint_delivered) -> None:
    run = index_run(200, read=interrupting_read(50, sigint_delivered), batch_size=8)

    def consume() -> None:
        with run:  # Ctrl-C may land in the loop body, outside the pipeline's own code
            for _ in run:
                time.sleep(0.001)

    with pytest.raises(KeyboardInterrupt):
        consume()
    assert sigint_delivered.is_set()
    assert not wait_for_no_pipeline_threads(1.0)


def test_ctrl_c_stops_the_run_at_a_batch_boundary(python_sigint) -> None:
    """Under CtrlCStops the first Ctrl-C only sets the stop event: no KeyboardInterrupt in
    the middle of the pipeline's locks, and every batch handed out is whole and in order."""
    stop, first_batch = threading.Event(), threading.Event()
    received: list[BatchResult] = []
    read = interrupting_read(50, stop, after=first_batch)
    with CtrlCStops(stop) as ctrl_c:
        run = index_run(200, read=read, batch_size=8, stop=stop)
        with run:
            for batch in run:
                received.append(batch)
                first_batch.set()
    assert ctrl_c.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # back
    assert run.stopped
    seen = check_ordered_batches(received, len(received) * 8, 8)
    assert 8 <= len(seen) <= 48  # nothing past item 50 was read before the stop
    assert not wait_for_no_pipeline_threads(1.0)


def test_ctrl_c_stops_does_nothing_where_python_does_not_handle_sigint() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with CtrlCStops(threading.Event()):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_read_past_the_item_timeout_is_skipped_and_the_rest_flows() -> None:
    """A read that never returns (a hung GET, a stuck network mount) becomes one failure;
    the items after it, held behind it by input order, come out; close() does not wait
    for the stuck thread."""
    release = threading.Event()

    def read(uri: str) -> bytes:
        if uri == "13":
            release.wait(30)  # bounded: without a deadline the run ends after 30 s
        return index_read(uri)

    started = time.monotonic()
    try:
        run = index_run(40, read=read, batch_size=8, io_threads=2, item_timeout=0.5)
        batches = collect(run)
        assert time.monotonic() - started < 20
        failures = [(f.index, f.reason, f.unreachable) for b in batches for f in b.failures]
        assert failures == [(13, "timed out after 0.5 s", True)]
        seen = check_ordered_batches(batches, 40, 8)
        assert seen == [i for i in range(40) if i != 13]
        assert [t for t in run.threads if t.is_alive()]  # the stuck one, abandoned
    finally:
        release.set()


def test_stuck_reads_are_bounded() -> None:
    """Every other read hangs: each is one skipped item, but a thread cannot be interrupted,
    so past max(16, 2 x io_threads) stuck at once the run stops instead of piling up
    threads; what came before is still handed out."""
    release = threading.Event()

    def read(uri: str) -> bytes:
        if int(uri) % 2:
            release.wait(30)
        return index_read(uri)

    batches: list[BatchResult] = []
    try:
        run = index_run(400, read=read, batch_size=4, io_threads=2, item_timeout=0.2)
        with pytest.raises(StoreDownError, match=r"17 reads are stuck past 0.2 s"), run:
            batches.extend(run)
        alive = [t for t in run.threads if t.is_alive()]
        assert 17 <= len(alive) <= 17 + 2 + 2 + 4  # the stuck ones, plus stragglers
    finally:
        release.set()
    failed = [f.index for b in batches for f in b.failures]
    assert failed == list(range(1, 35, 2))
    assert [int(i) for b in batches for i in b.indices] == list(range(0, 34, 2))


def test_unreachable_items_in_a_row_end_the_input_there() -> None:
    """A store that stops answering is the run's problem: items before the run of failures
    are embedded and handed out, then StoreDownError; the rest is not marked unreadable."""

    def read(uri: str) -> bytes:
        if uri == "3" or int(uri) >= 20:  # one lone failure is just a skipped item
            raise StoreUnreachableError("connection failed: ConnectionRefusedError")
        return index_read(uri)

    run = index_run(1000, read=read, batch_size=8, unreachable_limit=8)
    batches: list[BatchResult] = []
    with pytest.raises(StoreDownError, match="8 items in a row failed") as caught, run:
        batches.extend(run)
    assert isinstance(caught.value, RunError)
    assert "(last: 27: connection failed: ConnectionRefusedError)" in str(caught.value)
    assert [int(i) for b in batches for i in b.indices] == [i for i in range(20) if i != 3]
    failures = [f.index for b in batches for f in b.failures]
    assert failures == [3, *range(20, 28)]
    assert run.stats.as_dict()["items"] < 1000
    assert not wait_for_no_pipeline_threads(1.0)


def test_in_flight_items_stay_within_the_window() -> None:
    n, batch_size, io_threads, max_inflight_batches = 400, 8, 6, 3
    window = batch_size * max_inflight_batches
    lock = threading.Lock()
    reading = peak_reading = started = peak_ahead = 0
    consumed = 0

    def read(uri: str) -> bytes:
        nonlocal reading, peak_reading, started, peak_ahead
        with lock:
            reading += 1
            started += 1
            peak_reading = max(peak_reading, reading)
            peak_ahead = max(peak_ahead, started - consumed)
        time.sleep(0.002)
        with lock:
            reading -= 1
        if int(uri) % 10 == 3:
            raise ItemError("flaky")
        return uri.encode()

    run = index_run(
        n,
        read=read,
        batch_size=batch_size,
        io_threads=io_threads,
        max_inflight_batches=max_inflight_batches,
    )
    with run:
        for batch in run:
            with lock:
                consumed += len(batch.indices) + len(batch.failures)
            time.sleep(0.01)  # a slow consumer: the stages run ahead as far as allowed
    assert consumed == n
    assert peak_reading == io_threads
    # Slots come back once items are stacked into a batch: one batch in the model and one
    # waiting for this slow consumer come on top of the window. A failed item frees its slot
    # as soon as it is recorded, so the failures of those two batches and of the one being
    # collected (one in ten fails: at most two per batch of eight good ones) come on top too.
    limit = window + 2 * batch_size + 3 * 2
    assert window <= peak_ahead <= limit, peak_ahead


def test_a_slow_store_holds_the_model_to_one_batch_per_stream_and_one_more() -> None:
    """While the consumer stores a batch (fsync, commit, compaction), the model streams may run
    one batch each plus one more (so a stream never idles through a store), no further: a kill
    during the store then loses at most that many. (Before, the streams finished up to four
    batches past the one being stored: RESULTS.md, "Soak (issue 11)".)"""
    streams, batch_size, n = 2, 4, 4 * 12
    ahead = streams + 1  # batches that may enter the model while batch 0 is being stored
    lock = threading.Lock()
    stored = 0  # batches this consumer is done with
    ahead_at_entry: list[int] = []  # per forward pass: its batch minus the batches stored
    last_allowed_in = threading.Event()  # batch ahead - 1 entered the model
    beyond = threading.Event()  # a batch past the bound entered the model

    def embed(batch: torch.Tensor) -> np.ndarray:
        order = int(batch[0, 0]) // batch_size
        with lock:
            ahead_at_entry.append(order - stored)
        if order == ahead - 1:
            last_allowed_in.set()
        if order >= ahead:
            beyond.set()
        return index_embed(batch)

    run = index_run(n, embed=embed, batch_size=batch_size, model_streams=streams)
    with run:
        for number, _batch in enumerate(run):
            if number == 0:  # a slow store of batch 0: the streams run batches 1 and 2 ...
                assert last_allowed_in.wait(30)
                # ... and nothing further may start, however long the store takes. (The
                # wait is bounded: the old code got there within milliseconds.)
                assert not beyond.wait(2.0), "a batch past the bound entered the model"
            with lock:
                stored += 1
    assert stored == n // batch_size
    assert len(ahead_at_entry) == n // batch_size
    assert max(ahead_at_entry) <= ahead - 1, ahead_at_entry


def test_stats_and_progress() -> None:
    n, batch_size = 100, 16
    progress: list[int] = []

    def read(uri: str) -> bytes:
        if uri == "5":
            raise ItemError("missing")
        return slow_read(uri) if int(uri) % 10 == 0 else uri.encode()

    def preprocess(data: bytes) -> torch.Tensor:
        if data == b"6":
            raise ItemError("not an image")
        return index_preprocess(data)

    run = run_pipeline(
        [str(i) for i in range(n)],
        read=read,
        preprocess=preprocess,
        embed=index_embed,
        batch_size=batch_size,
        progress=progress.append,
    )
    batches = collect(run)
    check_ordered_batches(batches, n, batch_size)
    stats = run.stats.as_dict()
    assert stats["items"] == n
    assert stats["failures"] == 2
    assert stats["wall_s"] > 0
    stages = stats["stages"]
    assert set(stages) == {"prefetch", "preprocess", "infer"}
    assert [stages[s]["items"] for s in ("prefetch", "preprocess", "infer")] == [n, n - 1, n - 2]
    assert stages["prefetch"]["busy_s"] >= 10 * 0.01 * 0.9  # ten slow reads
    for stage in stages.values():
        assert stage["items_per_s"] > 0
        assert 0 < stage["utilization"] <= 1.0
    assert progress == sorted(progress)
    assert progress[-1] == n
    assert len(progress) == len(batches)


def test_invalid_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="batch size must be at least 1"):
        run_pipeline([], read=index_read, preprocess=index_preprocess, embed=index_embed,
                     batch_size=0)  # fmt: skip


def test_wrong_embedding_row_count_is_a_stage_error() -> None:
    def embed(batch: torch.Tensor) -> np.ndarray:
        return batch.numpy()[:-1]

    run = run_pipeline(
        [str(i) for i in range(10)], read=index_read, preprocess=index_preprocess, embed=embed
    )
    with pytest.raises(StageError, match=r"embed returned shape \(9, 2\) for 10 images"):
        collect(run)


def run_tuner(
    tuner: ThreadTuner,
    batches: int,
    speed: dict[int, float],
    share: float,
    idle: float | None = None,
) -> list[int]:
    """Feed the tuner batches of 64 at the given seconds per item. ``share``: the part of the
    CPU time its threads could use that this process got (below 0.85: another process
    competes); ``idle``: the part of the 2-core machine left idle (None: unknown)."""
    used = []
    for _ in range(batches):
        threads = tuner.next_threads()
        used.append(threads)
        seconds = speed[threads] * 64
        tuner.record(
            threads,
            seconds,
            64,
            full=True,
            cpu_seconds=share * seconds * threads,
            idle_seconds=None if idle is None else idle * seconds * 2,
        )
    return used


def test_thread_tuner_stays_on_all_threads_when_nothing_competes() -> None:
    tuner = ThreadTuner(2, cores=2)
    assert run_tuner(tuner, 12, {1: 0.010, 2: 0.006}, share=0.98, idle=0.02) == [2] * 12
    assert tuner.chosen == 2
    assert 1 not in tuner.seconds_per_item  # no batch was spent on a trial


def test_thread_tuner_tries_one_thread_under_competition_and_keeps_the_faster() -> None:
    tuner = ThreadTuner(2, cores=2, retry_after=6, min_gap=2)
    busy = {1: 0.010, 2: 0.030}  # another process takes a core: two threads crawl
    used = run_tuner(tuner, 10, busy, share=0.5, idle=0.0)
    # warm-up, one contended sample, a trial of one thread; then one thread, with all
    # threads retried after 6 batches
    assert used == [2, 2, 1, 1, 1, 1, 1, 1, 1, 2]
    assert tuner.chosen == 1
    tuner.record(1, 999.0, 10, full=False, cpu_seconds=0.0)  # a short last batch: no sample
    assert tuner.chosen == 1

    # The other process ends: at one thread a core sits idle, so all threads are retried
    # after min_gap batches (the short batch above counts), well before retry_after.
    used = run_tuner(tuner, 6, {1: 0.010, 2: 0.005}, share=0.98, idle=0.45)
    assert used == [1, 2, 2, 2, 2, 2]
    assert tuner.chosen == 2


def test_thread_tuner_keeps_all_threads_if_one_is_slower_anyway() -> None:
    tuner = ThreadTuner(2, cores=2, retry_after=4)
    used = run_tuner(tuner, 12, {1: 0.020, 2: 0.012}, share=0.7, idle=0.0)
    assert tuner.chosen == 2
    assert used.count(1) == 2  # a trial, then another only retry_after batches later


def test_thread_tuner_without_idle_signal_retries_on_a_schedule() -> None:
    tuner = ThreadTuner(2, cores=2, retry_after=3)
    used = run_tuner(tuner, 9, {1: 0.010, 2: 0.030}, share=0.5, idle=None)
    assert used == [2, 2, 1, 1, 1, 1, 2, 1, 1]
    assert tuner.chosen == 1


def test_auto_torch_threads_are_restored_after_the_run() -> None:
    torch.set_num_threads(2)
    run = index_run(
        64,
        batch_size=4,
        torch_threads="auto",
    )
    collect(run)
    assert torch.get_num_threads() == 2
    assert run.stats.as_dict()["torch_threads"] in (1, 2)


def test_pin_memory_is_harmless_without_cuda() -> None:
    run = index_run(
        10,
        batch_size=4,
        pin_memory=True,
    )
    assert all(thread.daemon for thread in run.threads)
    batches = collect(run)
    check_ordered_batches(batches, 10, 4)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_io_and_decode_threads_run_at_lower_priority() -> None:
    seen: dict[str, int] = {}

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def read(uri: str) -> bytes:
        seen["read"] = priority()
        return index_read(uri)

    def preprocess(data: bytes) -> torch.Tensor:
        seen["preprocess"] = priority()
        return index_preprocess(data)

    def embed(batch: torch.Tensor) -> np.ndarray:
        seen["embed"] = priority()
        return index_embed(batch)

    base = priority()
    collect(run_pipeline(["1", "2"], read=read, preprocess=preprocess, embed=embed, worker_nice=3))
    assert seen == {"read": min(19, base + 3), "preprocess": min(19, base + 3), "embed": base}


def test_importing_the_pipeline_does_not_import_torch() -> None:
    """The embed API imports Failure from here on its warm path, which must stay torch-free."""
    code = "import sys, alcli.pipeline; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/stat is Linux's")
def test_machine_idle_seconds_is_a_running_total() -> None:
    from alcli.pipeline import machine_idle_seconds

    first = machine_idle_seconds()
    time.sleep(0.05)
    second = machine_idle_seconds()
    assert first is not None
    assert second is not None
    assert 0 < first <= second


@pytest.mark.parametrize(
    ("torch_threads", "streams", "inline"),
    [("cores", 1, True), (1, "cores", True), (1, 1, False)],
)
def test_a_model_on_every_core_decodes_its_own_batches(torch_threads, streams, inline) -> None:
    """With a model thread per core (one stream on all, or a stream per core) the model
    threads decode (a decode thread could only take a core from them); with a core to spare,
    or for the first batch, decode threads do."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if "cores" in (torch_threads, streams) and (cores or 1) < 2:
        pytest.skip("one core: a model on every core is the one-thread case")
    threads = cores if torch_threads == "cores" else 1
    model_streams = cores if streams == "cores" else 1
    n, batch_size = 200, 10
    decoded_by: dict[int, str] = {}
    bad = {37, 150}

    def preprocess(data: bytes) -> torch.Tensor:
        index = int(data.decode())
        decoded_by[index] = threading.current_thread().name
        if index in bad:
            raise ItemError("corrupt")
        return index_preprocess(data)

    before = torch.get_num_threads()
    run = run_pipeline(
        [str(i) for i in range(n)],
        read=index_read,
        preprocess=preprocess,
        embed=index_embed,
        batch_size=batch_size,
        torch_threads=threads,
        model_streams=model_streams,
    )
    batches = collect(run)
    assert torch.get_num_threads() == before
    check_ordered_batches(batches, n, batch_size)
    assert sorted(f.index for b in batches for f in b.failures) == sorted(bad)
    by_model = {i for i, name in decoded_by.items() if "-infer-" in name}
    assert len(decoded_by) == n
    if inline:
        assert by_model  # the model thread decoded ...
        assert not by_model & set(range(batch_size))  # ... but not the first batch
    else:
        assert not by_model


def test_streams_finishing_out_of_order_still_yield_batches_in_order() -> None:
    """Three model streams, every other batch slow: later batches finish first, yet the
    consumer sees input order, and the work was spread over the streams."""
    ran_on: dict[int, str] = {}

    def uneven_embed(batch: torch.Tensor) -> np.ndarray:
        first = int(batch[0, 0])
        ran_on[first] = threading.current_thread().name
        time.sleep(0.03 if (first // 4) % 2 == 0 else 0.0)
        return index_embed(batch)

    bad = {8, 9, 10, 11}  # one whole batch of failures travels through a stream too

    def preprocess(data: bytes) -> torch.Tensor:
        if int(data.decode()) in bad:
            raise ItemError("corrupt")
        return index_preprocess(data)

    run = index_run(101, preprocess=preprocess, embed=uneven_embed, batch_size=4, model_streams=3)
    batches = collect(run)
    check_ordered_batches(batches, 101, 4)
    assert run.stats.as_dict()["model_streams"] == 3
    assert len(set(ran_on.values())) >= 2


def test_closing_with_streams_mid_forward_does_not_hang() -> None:
    def slow_embed(batch: torch.Tensor) -> np.ndarray:
        time.sleep(0.05)
        return index_embed(batch)

    run = index_run(100_000, embed=slow_embed, batch_size=8, model_streams=4)
    next(run)
    closing = time.monotonic()
    run.close()
    assert time.monotonic() - closing < 1.0
    assert not wait_for_no_pipeline_threads(1.0)


@pytest.mark.parametrize("streams", [0, -1, "many"])
def test_bad_model_streams_are_a_usage_error(streams: Any) -> None:
    with pytest.raises(UsageError, match="model streams"):
        index_run(4, model_streams=streams)


def test_cpu_streams_share_out_the_thread_budget() -> None:
    from alcli.pipeline import MAX_CPU_STREAMS, cpu_streams

    assert cpu_streams(1) == 1
    assert cpu_streams(2) == 2
    assert cpu_streams(64) == MAX_CPU_STREAMS
