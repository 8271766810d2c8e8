"""The cache under faults users hit: bytes changed in place, a damaged index, a read-only
folder, a kill or Ctrl-C at the worst moment. Real files, real subprocesses for kills and
exit codes; the cache must never serve wrong numbers and must heal on its own."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pytest

from alcli.cache import EmbeddingCache, database, integrity, segments
from alcli.embedding import EmbedOptions, embed
from helpers import write_pngs
from test_cache import DIM, FP, keys_for, rows_for, segment_files

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
TINY_OPTIONS = EmbedOptions(model="mobilenet_v3_small", weights="none", image_size=32)
TIMEOUT_S = 300


def alcli(
    *args: str, cache_dir: Path, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALCLI_CACHE_DIR": str(cache_dir), "HOME": str(cache_dir.parent)}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "alcli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )


def meta_of(directory: Path) -> diskcache.Cache:
    """The cache's index opened as the cache opens it (other settings would be written back)."""
    return diskcache.Cache(str(directory / "embeddings" / "meta"), **database.META_SETTINGS)


def temp_files(directory: Path) -> list[Path]:
    return sorted((directory / "embeddings" / "segments" / FP).glob(".tmp-*"))


# --- bytes changed inside a segment -------------------------------------------------------


@pytest.mark.parametrize("compacted", [False, True], ids=["two-segments", "one-mapped-segment"])
@pytest.mark.parametrize("damage", ["permuted", "overwritten"])
def test_rows_changed_in_place_are_never_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, compacted: bool
) -> None:
    keys = keys_for(range(20))
    with EmbeddingCache(tmp_path) as c:
        c.store(FP, keys[:10], rows_for(range(10)))
        c.store(FP, keys[10:], rows_for(range(10, 20)))
        if compacted:  # as embed leaves a pool: one segment, read as a memmap
            c.compact(FP)
        assert c.lookup(FP, keys)[1].all()  # read (and checked) once before the damage
        damaged = segment_files(tmp_path)[-1]
        size = damaged.stat().st_size
        row = DIM * 4
        with open(damaged, "r+b") as f:  # the last two rows: keys and header stay as they were
            f.seek(size - 2 * row)
            last_two = f.read()
            f.seek(size - 2 * row)
            f.write(last_two[row:] + last_two[:row] if damage == "permuted" else b"\x01" * 8)
        assert damaged.stat().st_size == size
        with caplog.at_level(logging.WARNING, logger="alcli.cache"):
            embeddings, found = c.lookup(FP, keys)
    lost = np.arange(20) < (0 if compacted else 10)
    np.testing.assert_array_equal(found, lost)  # every row of the damaged segment is dropped
    if found.any():  # (nothing left at all: the embeddings have no columns)
        np.testing.assert_array_equal(embeddings[found], rows_for(np.flatnonzero(found)))
    assert damaged.name in caplog.text
    assert "checksum" in caplog.text
    with EmbeddingCache(tmp_path) as c:  # a new process: still dropped; re-embedded, served
        assert not c.lookup(FP, keys)[1][~lost].any()
        c.store(FP, keys, rows_for(range(20)))
        embeddings, found = c.lookup(FP, keys)
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(20)))


@pytest.fixture
def data_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the segments whose data checksum was verified, in order."""
    checked: list[str] = []
    verify = segments.Segment.verify_data

    def counting(segment: Any) -> None:
        checked.append(segment.entry.name)
        verify(segment)

    monkeypatch.setattr(segments.Segment, "verify_data", counting)
    return checked


def test_an_unchanged_segment_is_checked_once_then_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_checks: list[str]
) -> None:
    """The warm path must not re-read every byte each run: one check per change of the file."""
    monkeypatch.setattr(integrity, "_RACY_NS", 0)  # do not wait out a clock tick
    keys = keys_for(range(50))
    with EmbeddingCache(tmp_path) as c:
        c.store(FP, keys, rows_for(range(50)))
    for _ in range(3):  # three "processes" (new cache objects), two reads each
        with EmbeddingCache(tmp_path) as c:
            assert c.lookup(FP, keys)[1].all()
            assert c.lookup(FP, keys[5:9])[1].all()
    assert len(data_checks) == 1
    os.utime(segment_files(tmp_path)[0], ns=(0, 0))  # any change to the file: checked again
    with EmbeddingCache(tmp_path) as c:
        assert c.lookup(FP, keys)[1].all()
    assert len(data_checks) == 2


def test_a_stamp_taken_as_the_file_changed_is_not_trusted(
    tmp_path: Path, data_checks: list[str]
) -> None:
    """A change in the same clock tick as the check would leave the same times: such a
    check is not remembered (a file time in the future stands for "the same tick")."""
    keys = keys_for(range(50))
    with EmbeddingCache(tmp_path) as c:
        c.store(FP, keys, rows_for(range(50)))
    soon = time.time_ns() + 3600 * 10**9
    os.utime(segment_files(tmp_path)[0], ns=(soon, soon))
    for _ in range(2):
        with EmbeddingCache(tmp_path) as c:
            assert c.lookup(FP, keys)[1].all()
    assert len(data_checks) == 2


def test_cache_verify_catches_damage_that_left_the_file_times_alone(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with EmbeddingCache(cache_dir) as c:
        c.store(FP, keys_for(range(10)), rows_for(range(10)))
        c.store(FP, keys_for(range(10, 20)), rows_for(range(10, 20)))
        c.store_failures(FP, keys_for([99]), ["not an image"])
    clean = alcli("cache", "verify", "--json", cache_dir=cache_dir)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout) == {"segments": 3, "rows": 20, "corrupt": []}
    info = alcli("cache", "info", "--json", cache_dir=cache_dir)
    assert json.loads(info.stdout)["fingerprints"][FP]["items"] == 20

    damaged = segment_files(cache_dir)[0]
    with open(damaged, "r+b") as f:  # one flipped bit, as a failing disk flips it
        f.seek(damaged.stat().st_size - 5)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))
    with meta_of(cache_dir) as meta:  # bit rot keeps the times: the stamp still matches
        info_now = damaged.stat()
        stamp = [info_now.st_ino, info_now.st_size, info_now.st_mtime_ns, info_now.st_ctime_ns]
        meta.set(f"verified:{FP}", {damaged.name: stamp})

    bad = alcli("cache", "verify", "--json", cache_dir=cache_dir)
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert [(r["file"], r["rows"]) for r in report["corrupt"]] == [(str(damaged), 10)]
    assert "checksum" in report["corrupt"][0]["reason"]
    human = alcli("cache", "verify", cache_dir=cache_dir)
    assert human.returncode == 0, human.stdout + human.stderr  # set aside by the first run
    assert "0 corrupt" in human.stdout
    assert damaged.with_name(damaged.name + ".corrupt").exists()
    with EmbeddingCache(cache_dir) as c:
        embeddings, found = c.lookup(FP, keys_for(range(20)))
        assert c.lookup_failures(FP, keys_for([99])) == {keys_for([99])[0]: "not an image"}
    np.testing.assert_array_equal(found, np.arange(20) >= 10)
    np.testing.assert_array_equal(embeddings[10:], rows_for(range(10, 20)))


# --- a damaged index ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_garbage_index_is_named_and_rebuilt_from_the_segments(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    write_pngs(pool, 6)
    cache_dir = tmp_path / "cache"
    embed(str(pool), options=TINY_OPTIONS, cache=cache_dir)
    index = cache_dir / "embeddings" / "meta" / "cache.db"
    index.write_bytes(np.random.default_rng(0).bytes(16384))
    write_pngs(pool, 2, seed=1, prefix="new")

    healed = alcli("embed", str(pool), *TINY, "--json", cache_dir=cache_dir)
    assert healed.returncode == 0, healed.stderr
    summary = json.loads(healed.stdout)
    assert (summary["cached"], summary["embedded"]) == (6, 2)  # only the new items computed
    assert str(index) in healed.stderr
    assert "rebuilt" in healed.stderr
    again = alcli("embed", str(pool), *TINY, "--json", cache_dir=cache_dir)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cached"] == 8
    assert "cache.db" not in again.stderr


@pytest.mark.parametrize("table", ["Cache", "Cache_key_raw"])
def test_a_damaged_index_page_found_after_opening_is_healed_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str
) -> None:
    """A bad page that opening does not touch surfaces at the first read: heal it there."""
    with EmbeddingCache(tmp_path) as c:
        c.store(FP, keys_for(range(10)), rows_for(range(10)))
    index = tmp_path / "embeddings" / "meta" / "cache.db"
    with contextlib.closing(sqlite3.connect(index)) as db:
        query = "SELECT rootpage FROM sqlite_master WHERE name = ?"
        (page,) = db.execute(query, (table,)).fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    with open(index, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xa5" * page_size)
    with caplog.at_level(logging.WARNING, logger="alcli.cache"), EmbeddingCache(tmp_path) as c:
        assert "unreadable" not in caplog.text  # opening did not notice
        embeddings, found = c.lookup(FP, keys_for(range(10)))
        c.store(FP, keys_for(range(10, 12)), rows_for(range(10, 12)))
    assert str(index) in caplog.text
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(10)))
    with EmbeddingCache(tmp_path) as c:
        assert c.lookup(FP, keys_for(range(12)))[1].all()


@pytest.mark.parametrize(
    "value",
    [
        "oops",
        ["not", "a", "manifest"],
        {"version": 1, "segments": 5},
        {"version": 1, "segments": [["../../../../etc/passwd", 0, 1, 16, 8, 0, 4096]]},
        {"version": 1, "segments": [["0" * 16 + "-1-" + "0" * 12 + ".seg", 0, 1, 16, 8, 0, "x"]]},
    ],
    ids=["str", "list", "segments-int", "path-escape", "field-type"],
)
def test_a_manifest_of_the_wrong_shape_is_rebuilt_from_the_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: object
) -> None:
    keys = keys_for(range(30))
    with EmbeddingCache(tmp_path) as c:
        c.store(FP, keys[:10], rows_for(range(10)))
        c.store(FP, keys[10:20], rows_for(range(100, 110)))
        c.store(FP, keys[5:10], rows_for(range(205, 210)))  # later store wins, also rebuilt
        c.store_failures(FP, keys[25:26], ["not an image"])
    with meta_of(tmp_path) as meta:
        meta.set(f"manifest:{FP}", value)
    with caplog.at_level(logging.WARNING, logger="alcli.cache"), EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys)
        assert c.lookup_failures(FP, keys[25:26]) == {keys[25]: "not an image"}
        assert c.stats(FP)[FP]["segments"] == 4
    assert "cache.db" in caplog.text
    assert FP in caplog.text
    np.testing.assert_array_equal(found, np.arange(30) < 20)
    expected = rows_for([*range(5), *range(205, 210), *range(100, 110)])
    np.testing.assert_array_equal(embeddings[:20], expected)


# --- a read-only cache --------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can read (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="alcli-read-only-"))
    path.chmod(0o755)
    yield path
    for inner in [path, *path.rglob("*")]:
        inner.chmod(inner.stat().st_mode | 0o200)
    shutil.rmtree(path)


def unprivileged() -> tuple[str, ...]:
    """Run as a user whom file modes bind: root ignores a read-only mode."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no user whom a read-only mode binds")
    return (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups")


@pytest.mark.slow
def test_a_read_only_cache_serves_warm_runs_and_refuses_cold_ones(shared_dir: Path) -> None:
    prefix = unprivileged()
    pool = shared_dir / "pool"
    write_pngs(pool, 5)
    cache_dir = shared_dir / "cache"
    cold = embed(str(pool), options=TINY_OPTIONS, cache=cache_dir)
    assert cold.embedded == 5
    for inner in [cache_dir, *cache_dir.rglob("*")]:  # chmod -R a-w
        inner.chmod(inner.stat().st_mode & ~0o222)
    before = sorted(cache_dir.rglob("*"))

    warm = alcli("embed", str(pool), *TINY, "--json", cache_dir=cache_dir, prefix=prefix)
    assert warm.returncode == 0, warm.stderr
    assert (json.loads(warm.stdout)["cached"], json.loads(warm.stdout)["embedded"]) == (5, 0)
    verify = alcli("cache", "verify", cache_dir=cache_dir, prefix=prefix)
    assert verify.returncode == 0, verify.stderr
    assert "read-only" in alcli("cache", "info", cache_dir=cache_dir, prefix=prefix).stdout

    (new,) = write_pngs(pool, 1, seed=3, prefix="new")
    refused = alcli("embed", str(pool), *TINY, cache_dir=cache_dir, prefix=prefix)
    assert refused.returncode == 2, refused.stderr
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert "read-only" in refused.stderr
    assert str(cache_dir) in refused.stderr
    assert sorted(cache_dir.rglob("*")) == before

    new.unlink()
    index = cache_dir / "embeddings" / "meta" / "cache.db"  # damaged too: segments only
    index.chmod(0o644)
    index.write_bytes(np.random.default_rng(1).bytes(8192))
    index.chmod(0o444)
    damaged = alcli("embed", str(pool), *TINY, "--json", cache_dir=cache_dir, prefix=prefix)
    assert damaged.returncode == 0, damaged.stderr
    assert json.loads(damaged.stdout)["cached"] == 5
    assert str(index) in damaged.stderr


# --- kills and Ctrl-C -----------------------------------------------------------------------

CHILD = """
import signal
import sys
import numpy as np
from alcli.cache import EmbeddingCache, compaction
from alcli.cache.compaction import Compactor
from alcli.cache.writer import Writer

FP, DIM = {fp!r}, {dim}
directory, mode = sys.argv[1], sys.argv[2]
# Ctrl-C as a terminal delivers it: a test started from a background job inherits SIGINT
# ignored, and Python then installs no handler, so the child would finish instead.
signal.signal(signal.SIGINT, signal.default_int_handler)


def keys(r):
    return [f"{{i:032x}}" for i in r]


def rows(r):
    idx = np.asarray(list(r), dtype=np.float32)
    return idx[:, None] + np.arange(DIM, dtype=np.float32)[None, :] * np.float32(0.001)


def stall(message):
    print(message, flush=True)
    sys.stdin.readline()  # until the parent kills or interrupts this process
"""


def start_child(body: str, directory: Path, mode: str) -> subprocess.Popen[str]:
    code = CHILD.format(fp=FP, dim=DIM) + body
    return subprocess.Popen(
        [sys.executable, "-c", code, str(directory), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(child: subprocess.Popen[str], message: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()  # bounded: the child prints it or exits (EOF)
    if line.strip() != message:
        child.kill()
        _, err = child.communicate(timeout=TIMEOUT_S)
        pytest.fail(f"child said {line!r}, not {message!r}: {err}")


def stop(child: subprocess.Popen[str], how: signal.Signals) -> int:
    child.send_signal(how)
    child.communicate(timeout=TIMEOUT_S)
    return child.returncode


KILLED_MID_COMPACTION = """
write = compaction.write_segment


def stalling(directory, *, payload, **kwargs):
    def pieces():
        for i, piece in enumerate(payload):
            if i == 1:  # the first piece is written: a merge is half on disk
                stall("writing")
            yield piece
    return write(directory, payload=pieces(), **kwargs)


compaction.write_segment = stalling
with EmbeddingCache(directory, auto_compact_segments=4 if mode == "auto" else 1000) as c:
    for b in range(4):
        c.store(FP, keys(range(b * 10, b * 10 + 10)), rows(range(b * 10, b * 10 + 10)))
    c.compact(FP)
"""


@pytest.mark.parametrize("mode", ["compact", "auto"])
def test_a_kill_mid_compaction_is_cleaned_up_and_finished_on_open(
    tmp_path: Path, mode: str
) -> None:
    child = start_child(KILLED_MID_COMPACTION, tmp_path, mode)
    wait_for(child, "writing")
    assert len(temp_files(tmp_path)) == 1
    with EmbeddingCache(tmp_path) as c:  # while the writer lives, its temp file is its own
        assert c.lookup(FP, keys_for(range(40)))[1].all()
    assert len(temp_files(tmp_path)) == 1
    assert stop(child, signal.SIGKILL) == -signal.SIGKILL
    assert len(segment_files(tmp_path)) == 4

    with EmbeddingCache(tmp_path, auto_compact_segments=1000) as c:
        embeddings, found = c.lookup(FP, keys_for(range(40)))
        stats = c.stats(FP)[FP]
    assert temp_files(tmp_path) == []
    assert (stats["segments"], stats["rows"]) == (1, 40)  # the merge was finished
    assert len(segment_files(tmp_path)) == 1
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(40)))


STOPPED_BEFORE_COMMIT = """
append = Writer.append
calls = []


def stalling(self, fingerprint, entries, dim):
    calls.append(1)
    if len(calls) == 3:  # the third batch is renamed into place, not yet listed
        stall("renamed")
    return append(self, fingerprint, entries, dim)


Writer.append = stalling
try:
    with EmbeddingCache(directory) as c:
        for b in range(5):
            c.store(FP, keys(range(b * 10, b * 10 + 10)), rows(range(b * 10, b * 10 + 10)))
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_a_batch_stopped_between_rename_and_commit_is_kept(
    tmp_path: Path, how: signal.Signals
) -> None:
    child = start_child(STOPPED_BEFORE_COMMIT, tmp_path, "store")
    wait_for(child, "renamed")
    assert len(segment_files(tmp_path)) == 3
    with EmbeddingCache(tmp_path) as c:  # a live writer's uncommitted batch is not adopted
        np.testing.assert_array_equal(c.lookup(FP, keys_for(range(30)))[1], np.arange(30) < 20)
    assert stop(child, how) == (130 if how == signal.SIGINT else -signal.SIGKILL)

    with EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys_for(range(50)))
        assert c.stats(FP)[FP]["segments"] == 3
    np.testing.assert_array_equal(found, np.arange(50) < 30)
    np.testing.assert_array_equal(embeddings[:30], rows_for(range(30)))


KILLED_AFTER_SWAP = """
swap = Compactor.swap


def stalling(self, *args):
    done = swap(self, *args)
    stall("swapped")  # merged and listed; the members' files not deleted yet
    return done


Compactor.swap = stalling
with EmbeddingCache(directory) as c:
    c.store(FP, keys(range(10)), rows(range(10)))
    c.store(FP, keys(range(5, 15)), rows(range(105, 115)))
    c.compact(FP)
"""


def test_segments_a_killed_compaction_had_merged_are_deleted_not_adopted(tmp_path: Path) -> None:
    child = start_child(KILLED_AFTER_SWAP, tmp_path, "compact")
    wait_for(child, "swapped")
    assert stop(child, signal.SIGKILL) == -signal.SIGKILL
    assert len(segment_files(tmp_path)) == 3  # the merged segment and its two members
    with EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys_for(range(15)))
        stats = c.stats(FP)[FP]
    assert (stats["segments"], stats["rows"]) == (1, 15)
    assert len(segment_files(tmp_path)) == 1
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for([*range(5), *range(105, 115)]))


# --- caches written by earlier versions -----------------------------------------------------


def write_first_format_cache(directory: Path, keys: list[str], rows: np.ndarray) -> None:
    """A cache byte for byte as the first segment format (alcli 0.1.0, commit 608c453) wrote
    it, without its code: a 64-byte header (magic, version 1, kind, key width, rows, dim,
    dtype, payload bytes, keys crc32, data crc32, header crc32), the raw keys, zero padding
    to a multiple of 64, the rows; and per fingerprint a manifest dict in diskcache."""
    folder = directory / "embeddings" / "segments" / FP
    folder.mkdir(parents=True)

    def segment(kind: int, raw_keys: bytes, n: int, width: int, dim: int, payload: bytes) -> tuple:
        name = f"{time.time_ns():016x}-{os.getpid():x}-{uuid.uuid4().hex[:12]}.seg"
        offset = -(-(64 + len(raw_keys)) // 64) * 64
        head = struct.pack(
            "<8sHHIQIIQII",
            *(b"ALCLISEG", 1, kind, width, n, dim, 0, len(payload)),
            *(zlib.crc32(raw_keys), zlib.crc32(payload)),
        )
        head = (head + struct.pack("<I", zlib.crc32(head))).ljust(64, b"\0")
        padding = bytes(offset - 64 - len(raw_keys))
        (folder / name).write_bytes(head + raw_keys + padding + payload)
        return (name, kind, n, width, dim, 0, offset + len(payload))

    raw = bytes.fromhex("".join(keys))
    record = json.dumps({"keys": ["ff"], "reasons": ["not an image"]}).encode()
    entries = [
        segment(0, raw, len(keys), len(keys[0]) // 2, rows.shape[1], rows.astype("<f4").tobytes()),
        segment(1, b"", 1, 0, 0, record),
    ]
    with meta_of(directory) as meta:
        meta.set(f"manifest:{FP}", {"version": 1, "segments": entries})


def test_a_cache_in_the_first_format_is_read_and_extended(tmp_path: Path) -> None:
    keys = keys_for(range(30))
    write_first_format_cache(tmp_path, keys[:20], rows_for(range(20)))
    with EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys[:20])
        assert found.all()
        np.testing.assert_array_equal(embeddings, rows_for(range(20)))
        assert c.lookup_failures(FP, ["FF"]) == {"FF": "not an image"}
        assert all(row["ok"] for row in c.verify())
        c.store(FP, keys[20:], rows_for(range(20, 30)))
        c.compact(FP)
    with EmbeddingCache(tmp_path) as c:
        embeddings, found = c.lookup(FP, keys)
        assert c.stats(FP)[FP]["segments"] == 2
    assert found.all()
    np.testing.assert_array_equal(embeddings, rows_for(range(30)))
