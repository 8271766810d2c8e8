"""The embedding cache: round trips, misses, segments, compaction, corruption, processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alcli.cache import EmbeddingCache, default_cache_dir
from alcli.cache import keys as cache_keys

FP = "0f1e2d3c4b5a6978"
DIM = 8
FORK = multiprocessing.get_context("fork")


def keys_for(indices: range | list[int] | np.ndarray, prefix: int = 0) -> list[str]:
    return [f"{prefix:08x}{int(i):024x}" for i in indices]


def rows_for(indices: range | list[int] | np.ndarray, dim: int = DIM) -> np.ndarray:
    """Row i is i + 0.001 * column, so any row can be checked against its key."""
    idx = np.asarray(list(indices), dtype=np.float32)
    return idx[:, None] + np.arange(dim, dtype=np.float32)[None, :] * np.float32(0.001)


def segment_files(directory: Path, fingerprint: str = FP) -> list[Path]:
    """Committed-looking segment files, oldest first (names start with a time stamp)."""
    folder = directory / "embeddings" / "segments" / fingerprint
    return sorted(p for p in folder.glob("*.seg") if not p.name.startswith("."))


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[EmbeddingCache]:
    with EmbeddingCache(tmp_path, auto_compact_segments=1000) as c:
        yield c


def test_round_trip_returns_exact_float32_rows(cache: EmbeddingCache) -> None:
    keys = keys_for(range(100))
    cache.store(FP, keys, rows_for(range(100)))
    embeddings, found = cache.lookup(FP, keys)
    assert embeddings.dtype == np.float32
    assert embeddings.shape == (100, DIM)
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(100)))


def test_round_trip_survives_a_new_cache_object(tmp_path: Path) -> None:
    keys = keys_for(range(10))
    with EmbeddingCache(tmp_path) as first:
        first.store(FP, keys, rows_for(range(10)))
    with EmbeddingCache(tmp_path) as second:
        embeddings, found = second.lookup(FP, keys)
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(10)))


def test_missing_keys_are_zero_rows_and_false(cache: EmbeddingCache) -> None:
    cache.store(FP, keys_for(range(0, 10, 2)), rows_for(range(0, 10, 2)))
    embeddings, found = cache.lookup(FP, keys_for(range(10)))
    np.testing.assert_array_equal(found, np.arange(10) % 2 == 0)
    np.testing.assert_array_equal(embeddings[1::2], 0.0)
    np.testing.assert_array_equal(embeddings[::2], rows_for(range(0, 10, 2)))


def test_unknown_fingerprint_is_a_miss_with_no_columns(cache: EmbeddingCache) -> None:
    keys = keys_for(range(5))
    cache.store(FP, keys, rows_for(range(5)))
    embeddings, found = cache.lookup("aaaaaaaaaaaaaaaa", keys)
    assert embeddings.shape == (5, 0)
    assert not found.any()


def test_empty_lookup_and_store(cache: EmbeddingCache) -> None:
    cache.store(FP, [], np.zeros((0, DIM), np.float32))
    embeddings, found = cache.lookup(FP, [])
    assert embeddings.shape == (0, 0)
    assert found.shape == (0,)


def test_many_segments_any_query_order_and_repeats(cache: EmbeddingCache) -> None:
    for start in range(0, 500, 50):
        cache.store(FP, keys_for(range(start, start + 50)), rows_for(range(start, start + 50)))
    assert cache.stats(FP)[FP]["segments"] == 10
    order = np.random.default_rng(0).permutation(500)
    query = np.concatenate([order, order[:7], [600, 601]])  # repeats and misses
    embeddings, found = cache.lookup(FP, keys_for(query))
    assert found[:507].all()
    assert not found[507:].any()
    np.testing.assert_array_equal(embeddings[:507], rows_for(query[:507]))


def test_same_key_stored_twice_later_wins_and_counts_once(cache: EmbeddingCache) -> None:
    keys = keys_for(range(20))
    cache.store(FP, keys, rows_for(range(20)))
    cache.store(FP, keys[:5], rows_for(range(100, 105)))
    # the same key twice in one batch: the later row wins as well
    cache.store(FP, [keys[7], keys[7]], rows_for([200, 201]))
    embeddings, found = cache.lookup(FP, keys)
    assert found.all()
    np.testing.assert_array_equal(embeddings[:5], rows_for(range(100, 105)))
    np.testing.assert_array_equal(embeddings[7], rows_for([201])[0])
    np.testing.assert_array_equal(embeddings[8:], rows_for(range(8, 20)))
    stats = cache.stats(FP)[FP]
    assert stats["items"] == 20
    assert stats["rows"] == 27


def test_keys_of_other_lengths_and_upper_case(cache: EmbeddingCache) -> None:
    short = ["ab", "cd01", "ef0123", "0123456789abcdef0123"]  # 1..10 bytes
    long = ["f" * 64, "e" * 64]
    cache.store(FP, short + long, rows_for(range(6)))
    embeddings, found = cache.lookup(FP, ["CD01", "ab", "F" * 64, "99"])
    np.testing.assert_array_equal(found, [True, True, True, False])
    np.testing.assert_array_equal(embeddings[:3], rows_for([1, 0, 4]))


@pytest.mark.parametrize("bad_key", ["xyz0", "abc", "", "ab cd "])
def test_keys_that_are_not_hex_are_refused(cache: EmbeddingCache, bad_key: str) -> None:
    with pytest.raises(ValueError, match="hex"):
        cache.store(FP, ["00ff", bad_key], rows_for(range(2)))


def _low_byte(words: np.ndarray) -> np.ndarray:
    """The key's last byte (keys_for puts the index there), unique below 256."""
    return words[:, -1] >> np.uint64(56)


def _high(values: np.ndarray) -> np.ndarray:
    """Weak hash values moved to high bits: the index keeps a hash's high bits only."""
    return values << np.uint64(40)


@pytest.mark.parametrize(
    ("weak_hash", "n"),
    [
        (lambda words: _high(_low_byte(words) % np.uint64(32)), 40),  # dict + long buckets
        (lambda words: _high(_low_byte(words)), 200),  # skewed buckets: sorted search
        (lambda words: np.zeros(len(words), np.uint64), 30),  # everything collides
    ],
    ids=["some-collide", "skewed-buckets", "all-collide"],
)
def test_weak_hashes_still_find_exactly_the_stored_keys(
    cache: EmbeddingCache, monkeypatch: pytest.MonkeyPatch, weak_hash: object, n: int
) -> None:
    monkeypatch.setattr(cache_keys, "_key_hash", weak_hash)
    keys = keys_for(range(n))
    cache.store(FP, keys, rows_for(range(n)))
    cache.store(FP, keys[:3], rows_for(range(500, 503)))
    embeddings, found = cache.lookup(FP, [*keys[::-1], *keys_for([n + 1, 255])])
    assert found[:n].all()
    assert not found[n:].any()
    expected = rows_for(range(n))
    expected[:3] = rows_for(range(500, 503))
    np.testing.assert_array_equal(embeddings[:n], expected[::-1])
    assert cache.stats(FP)[FP]["items"] == n
    cache.compact(FP)
    assert cache.stats(FP)[FP]["rows"] == n
    again, _ = cache.lookup(FP, keys[::-1])
    np.testing.assert_array_equal(again, expected[::-1])


def test_dim_mismatch_is_a_value_error(cache: EmbeddingCache) -> None:
    cache.store(FP, keys_for(range(3)), rows_for(range(3)))
    with pytest.raises(ValueError, match="dim 4 but fingerprint"):
        cache.store(FP, keys_for(range(3, 6)), rows_for(range(3, 6), dim=4))
    # another fingerprint may have another dim
    cache.store("beef", keys_for(range(3)), rows_for(range(3), dim=4))
    assert cache.stats()["beef"]["dim"] == 4


def test_shape_mismatch_is_a_value_error(cache: EmbeddingCache) -> None:
    with pytest.raises(ValueError, match="one row per key"):
        cache.store(FP, keys_for(range(3)), rows_for(range(2)))
    with pytest.raises(ValueError, match="one row per key"):
        cache.store(FP, keys_for(range(3)), np.zeros(3, np.float32))


def test_bad_fingerprint_is_refused(cache: EmbeddingCache) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        cache.lookup("../etc", keys_for(range(1)))


def test_compaction_keeps_results_identical_and_leaves_one_segment(
    tmp_path: Path, cache: EmbeddingCache
) -> None:
    for start in range(0, 300, 30):
        cache.store(FP, keys_for(range(start, start + 30)), rows_for(range(start, start + 30)))
    cache.store(FP, keys_for(range(10)), rows_for(range(1000, 1010)))  # supersedes rows
    query = keys_for(np.random.default_rng(1).permutation(320))
    before = cache.lookup(FP, query)
    cache.compact(FP)
    stats = cache.stats(FP)[FP]
    assert stats["segments"] == 1
    assert stats["rows"] == stats["items"] == 300
    assert len(segment_files(tmp_path)) == 1
    for c in (cache, EmbeddingCache(tmp_path)):
        after = c.lookup(FP, query)
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])


def test_compaction_of_small_segments_keeps_later_stores_winning(tmp_path: Path) -> None:
    """Small segments around a big one merge; the big one's newer rows must still win."""
    with EmbeddingCache(tmp_path, auto_compact_segments=3, small_segment_bytes=1000) as c:
        c.store(FP, keys_for(range(5)), rows_for(range(5)))  # small: oldest values
        c.store(FP, keys_for(range(100)), rows_for(range(100, 200)))  # big: newer values
        c.store(FP, keys_for([0, 1, 200, 201]), rows_for([500, 501, 200, 201]))  # small: newest
        c.store(FP, keys_for(range(300, 302)), rows_for(range(300, 302)))  # small: merge
        stats = c.stats(FP)[FP]
        assert stats["segments"] == 2
        assert stats["items"] == 104
        assert stats["rows"] == 100 + 6  # the merge kept only its members' winning rows
        embeddings, found = c.lookup(FP, keys_for([*range(5), 200, 301]))
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for([500, 501, 102, 103, 104, 200, 301]))


def test_auto_compaction_bounds_the_segment_count(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path, auto_compact_segments=8) as c:
        for start in range(0, 400, 10):
            c.store(FP, keys_for(range(start, start + 10)), rows_for(range(start, start + 10)))
            assert c.stats(FP)[FP]["segments"] < 8
        embeddings, found = c.lookup(FP, keys_for(range(400)))
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(400)))
    assert len(segment_files(tmp_path)) < 8


def test_compaction_collects_orphans_but_not_fresh_temp_files(
    tmp_path: Path, cache: EmbeddingCache
) -> None:
    cache.store(FP, keys_for(range(3)), rows_for(range(3)))
    directory = segment_files(tmp_path)[0].parent
    old_orphan = directory / "0000-dead-killed.seg"
    old_temp = directory / ".tmp-0000-dead-killed.seg"
    fresh_temp = directory / ".tmp-ffff-live-writer.seg"
    for path in (old_orphan, old_temp, fresh_temp):
        path.write_bytes(b"partial")
    long_ago = time.time() - 2 * 3600
    for path in (old_orphan, old_temp):
        os.utime(path, (long_ago, long_ago))
    cache.compact(FP)
    assert not old_orphan.exists()
    assert not old_temp.exists()
    assert fresh_temp.exists()
    assert cache.lookup(FP, keys_for(range(3)))[1].all()


def test_corrupt_segments_are_ignored_with_a_warning(
    tmp_path: Path, cache: EmbeddingCache, caplog: pytest.LogCaptureFixture
) -> None:
    for b in range(4):
        cache.store(FP, keys_for(range(b * 10, b * 10 + 10)), rows_for(range(b * 10, b * 10 + 10)))
    files = segment_files(tmp_path)
    assert len(files) == 4
    with open(files[1], "r+b") as f:  # truncated: a crash or a full disk
        f.truncate(files[1].stat().st_size - 7)
    with open(files[2], "r+b") as f:  # garbage over the header
        f.write(b"\xff" * 32)
    files[3].unlink()  # gone, yet still listed

    with caplog.at_level(logging.WARNING, logger="alcli.cache"), EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys_for(range(40)))
        np.testing.assert_array_equal(found, np.arange(40) < 10)
        np.testing.assert_array_equal(embeddings[:10], rows_for(range(10)))
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "truncated" in messages
        assert "bad header" in messages
        assert "missing" in messages
        c.compact(FP)  # drops them from the manifest
        assert c.stats(FP)[FP]["segments"] == 1
    assert len(list(files[0].parent.glob("*.corrupt"))) == 2
    with EmbeddingCache(tmp_path) as fresh:
        np.testing.assert_array_equal(fresh.lookup(FP, keys_for(range(40)))[1], found)


def test_flipped_data_bytes_are_caught_by_compaction(
    tmp_path: Path, cache: EmbeddingCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache.store(FP, keys_for(range(10)), rows_for(range(10)))
    cache.store(FP, keys_for(range(10, 20)), rows_for(range(10, 20)))
    damaged = segment_files(tmp_path)[1]
    with open(damaged, "r+b") as f:
        f.seek(damaged.stat().st_size - 4)
        f.write(b"\x01\x02\x03\x04")
    with caplog.at_level(logging.WARNING, logger="alcli.cache"):
        cache.compact(FP)
    assert "data checksum" in caplog.text
    embeddings, found = cache.lookup(FP, keys_for(range(20)))
    np.testing.assert_array_equal(found, np.arange(20) < 10)
    np.testing.assert_array_equal(embeddings[:10], rows_for(range(10)))


def test_failures_round_trip_latest_reason_wins(tmp_path: Path, cache: EmbeddingCache) -> None:
    keys = keys_for(range(6))
    assert cache.lookup_failures(FP, keys) == {}
    cache.store_failures(FP, keys[:3], ["not an image", "truncated file", "404"])
    cache.store_failures(FP, [keys[2].upper()], ["403 forbidden"])
    expected = {keys[0]: "not an image", keys[1]: "truncated file", keys[2]: "403 forbidden"}
    assert cache.lookup_failures(FP, keys) == expected
    assert cache.lookup_failures("beef", keys) == {}
    assert cache.stats(FP)[FP]["failures"] == 3
    cache.compact(FP)
    with EmbeddingCache(tmp_path) as c:
        assert c.lookup_failures(FP, keys) == expected
        assert c.stats(FP)[FP]["segments"] == 1
    with pytest.raises(ValueError, match="one per key"):
        cache.store_failures(FP, keys[:2], ["one reason"])


def test_float16_storage_reads_back_as_float32(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path, storage_dtype="float16") as c:
        c.store(FP, keys_for(range(50)), rows_for(range(50)))
        embeddings, found = c.lookup(FP, keys_for(range(50)))
        sparse, _ = c.lookup(FP, keys_for([3]))
    assert found.all()
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, rows_for(range(50)), rtol=1e-3)
    np.testing.assert_array_equal(sparse, embeddings[3:4])
    with EmbeddingCache(tmp_path / "f32") as c32:
        c32.store(FP, keys_for(range(50)), rows_for(range(50)))
        bytes32 = c32.stats(FP)[FP]["bytes"]
    bytes16 = EmbeddingCache(tmp_path).stats(FP)[FP]["bytes"]
    assert bytes32 - bytes16 == 50 * DIM * 2


def test_stats_and_clear(tmp_path: Path, cache: EmbeddingCache) -> None:
    cache.store(FP, keys_for(range(10)), rows_for(range(10)))
    cache.store("beef", keys_for(range(4)), rows_for(range(4), dim=3))
    stats = cache.stats()
    assert set(stats) == {FP, "beef"}
    assert stats[FP]["items"] == 10
    assert stats["beef"] == {
        "dim": 3,
        "items": 4,
        "rows": 4,
        "failures": 0,
        "segments": 1,
        "bytes": segment_files(tmp_path, "beef")[0].stat().st_size,
    }
    cache.clear(FP)
    assert not cache.lookup(FP, keys_for(range(10)))[1].any()
    assert not segment_files(tmp_path)
    assert cache.lookup("beef", keys_for(range(4)))[1].all()
    cache.clear()
    assert cache.stats() == {}
    # a cleared fingerprint may take another dim
    cache.store(FP, keys_for(range(2)), rows_for(range(2), dim=5))


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALCLI_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("ALCLI_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "alcli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "alcli"


def test_unwritable_directory_is_a_run_error(tmp_path: Path) -> None:
    from alcli.errors import RunError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match="cannot open the embedding cache"):
        EmbeddingCache(blocker)


# --- two processes ----------------------------------------------------------------------


def _writer_and_reader(directory: str, worker: int, errors: multiprocessing.Queue) -> None:
    """Store batches (overlapping with the other worker's) and check every lookup."""
    try:
        with EmbeddingCache(directory, durable=False, auto_compact_segments=4) as c:
            seen = 0
            for batch in range(30):
                start = (batch * 2 + worker) * 20
                indices = range(start, start + 30)  # 10 rows overlap the next batch
                c.store(FP, keys_for(indices), rows_for(indices))
                query = keys_for(range(1300))
                embeddings, found = c.lookup(FP, query)
                hits = np.flatnonzero(found)
                np.testing.assert_array_equal(embeddings[hits], rows_for(hits))
                assert found[start : start + 30].all()
                assert len(hits) >= seen, "a lookup lost rows"
                seen = len(hits)
                if batch % 7 == worker:
                    c.compact(FP)
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def test_two_processes_store_and_look_up_at_once(tmp_path: Path) -> None:
    errors = FORK.Queue()
    workers = [
        FORK.Process(target=_writer_and_reader, args=(str(tmp_path), w, errors)) for w in (0, 1)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors.empty(), errors.get()
    assert [w.exitcode for w in workers] == [0, 0]
    total = (29 * 2 + 1) * 20 + 30
    with EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys_for(range(total)))
        assert found.all()
        np.testing.assert_array_equal(embeddings, rows_for(range(total)))
        assert c.stats(FP)[FP]["items"] == total


# --- crashes ------------------------------------------------------------------------------


def _endless_writer(directory: str, round_: int, log_path: str) -> None:
    """Store batches forever, logging each batch once its store has returned."""
    with EmbeddingCache(directory, auto_compact_segments=4) as c, open(log_path, "a") as log:
        batch = 0
        while True:
            indices = range(batch * 25, batch * 25 + 25)
            c.store(FP, keys_for(indices, prefix=round_), rows_for(indices))
            if batch % 3 == 2:
                c.store_failures(FP, keys_for([batch], prefix=1000 + round_), [f"bad {batch}"])
            log.write(f"{batch}\n")
            log.flush()
            batch += 1


def test_writers_killed_mid_store_lose_nothing_committed(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    cache_dir = tmp_path / "cache"
    for round_ in range(5):
        log_path = tmp_path / f"round{round_}.log"
        log_path.touch()
        writer = FORK.Process(target=_endless_writer, args=(str(cache_dir), round_, str(log_path)))
        writer.start()
        deadline = time.monotonic() + 10
        while not log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL

    with EmbeddingCache(cache_dir) as c:
        for round_ in range(5):
            done = len((tmp_path / f"round{round_}.log").read_text().split())
            assert done > 0
            indices = range((done + 1) * 25)  # committed batches + the one in flight
            embeddings, found = c.lookup(FP, keys_for(indices, prefix=round_))
            assert found[: done * 25].all(), f"round {round_} lost committed rows"
            in_flight = found[done * 25 :]
            assert in_flight.all() or not in_flight.any(), "a batch was half stored"
            np.testing.assert_array_equal(embeddings[found], rows_for(np.flatnonzero(found)))
            failed = c.lookup_failures(FP, keys_for(range(done), prefix=1000 + round_))
            assert len(failed) == len([b for b in range(done) if b % 3 == 2])
        c.compact(FP)
        assert c.stats(FP)[FP]["segments"] <= 2
        embeddings, found = c.lookup(FP, keys_for(range(25), prefix=0))
        assert found.all()
        np.testing.assert_array_equal(embeddings, rows_for(range(25)))


def test_in_order_run_of_one_segment_is_a_zero_copy_memmap(cache: EmbeddingCache) -> None:
    for start in range(0, 300, 100):  # pipeline-sized batches, then one compacted segment
        cache.store(FP, keys_for(range(start, start + 100)), rows_for(range(start, start + 100)))
    cache.compact(FP)
    got, found = cache.lookup(FP, keys_for(range(300)))
    assert found.all()
    assert isinstance(got, np.memmap)
    assert not got.flags.writeable
    np.testing.assert_array_equal(got, rows_for(range(300)))
    part, _ = cache.lookup(FP, keys_for(range(50, 120)))
    assert isinstance(part, np.memmap)
    np.testing.assert_array_equal(part, rows_for(range(50, 120)))
    # Any other shape of request gets a fresh, writable array with the same rows.
    order = [5, 3, 4]
    other, _ = cache.lookup(FP, keys_for(order))
    assert not isinstance(other, np.memmap)
    np.testing.assert_array_equal(other, rows_for(order))
    with_missing, found = cache.lookup(FP, keys_for([1, 2, 999]))
    assert not isinstance(with_missing, np.memmap)
    assert found.tolist() == [True, True, False]


def test_contains_is_lookups_mask_and_drops_a_segment_changed_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``contains`` gathers no row, yet answers as ``lookup`` would, corrupt segments too."""
    keys = keys_for(range(20))
    with EmbeddingCache(tmp_path) as c:
        assert not c.contains(FP, keys).any()  # nothing stored for the fingerprint yet
        c.store(FP, keys[:10], rows_for(range(10)))
        c.store(FP, keys[10:], rows_for(range(10, 20)))
        query = keys_for([25, 3, 12, 40, 19, 0])
        np.testing.assert_array_equal(c.contains(FP, query), [False, True, True, False, True, True])
        np.testing.assert_array_equal(c.contains(FP, query), c.lookup(FP, query)[1])
        assert c.contains(FP, []).shape == (0,)
        damaged = segment_files(tmp_path)[-1]
        with open(damaged, "r+b") as f:  # the last row overwritten: size and header unchanged
            f.seek(damaged.stat().st_size - 8)
            f.write(b"\x01" * 8)
        with caplog.at_level(logging.WARNING, logger="alcli.cache"):
            found = c.contains(FP, keys)
    np.testing.assert_array_equal(found, np.arange(20) < 10)
    assert damaged.name in caplog.text
    assert "checksum" in caplog.text
