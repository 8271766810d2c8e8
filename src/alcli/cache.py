"""The embedding store: append-only segment files of rows, with a manifest in diskcache.

An embedding run over a pool of millions of images happens once; every later command reads
the embeddings back, so reading a warm pool must cost seconds, not minutes. Measured on the
2-core dev box (262,144 rows × 512 float32 = 512 MiB, page cache warm):

- one diskcache entry per 1,024-row block: fill 4.1 s, read 1.53 s (≈ 6 s per 1M rows;
  one entry per *item* is ≈ 30 s per 1M, see DESIGN.md);
- one raw segment file per 1,024-row block, read with one ``readinto``: fill 1.5 s, read
  0.26 s (≈ 1 s per 1M rows); a memmap copy costs the same 0.27 s.

So rows live in raw *segment* files (header, keys block, data block), written to a temp file,
fsynced (≈ 9 ms per 2 MiB segment here) and renamed, so a segment is whole or absent. diskcache
holds only what must be process-safe: per fingerprint a *manifest* (dim and the ordered list
of committed segments), updated in SQLite transactions. A segment counts once the manifest
lists it.

Keys are hex digests; they become raw bytes through one ``bytes.fromhex("".join(keys))``
(47 ms per 1M keys, against 94 ms for ``np.array(keys, "S32")`` and 308 ms for a
``bytes.fromhex`` per key). The in-memory index per fingerprint (built once per manifest
version, ≈ 0.18 s per 1M keys) holds the keys sorted by a 64-bit hash plus a bucket table over
the hash's top bits, so a query is a few vectorised gathers: ≈ 0.26 s per 1M keys, against
0.41 s sorting the queries and ``np.searchsorted`` (0.44 s unsorted, 1.5 s searching ``S32``
strings). The full key is always compared, so a hash collision costs a dict lookup, never a
wrong row. The same key stored twice: the later store wins, everywhere (lookups, compaction).

Many small segments (pipeline batches of 64-1,024 rows) are merged automatically once a
fingerprint has ``auto_compact_segments`` of them; ``compact`` merges everything. A merge
writes a new segment, swaps it into the manifest in one transaction, then deletes the old
files; a reader holding an older manifest that finds a file gone re-reads the manifest and
retries, and a file already open stays readable.

Integrity: the cache never serves rows it has not checked, and heals what it can.

- Every open checks a segment's header (own crc32), size and keys crc32. Rows are served only
  after the data crc32 matched since the file last changed: a check is remembered in the index
  (``verified:<fingerprint>``) with the file's inode, size, mtime and ctime, so a warm read of
  an unchanged segment costs one ``fstat``, and the first read after any change (rows
  overwritten or permuted in place, a restore, a ``chmod``) one pass at ≈ 2.5 GB/s (crc32;
  blake2b ≈ 0.6, sha1 ≈ 1.3; ≈ 0.9 s per 1M × 512 float32). A stamp taken within
  ``_RACY_NS`` of the file's last change is never trusted (git's "racily clean" rule).
  Damage that leaves a file's times alone (bit rot) shows only to ``verify`` (``alcli cache
  verify``), which reads everything. A segment that fails a check is logged by path and
  ignored (its items are embedded again), never served, never fatal; compaction sets the
  file aside as ``*.corrupt``.
- The index is rebuildable: segments carry their keys, shape and checksums, and their names
  start with a time stamp, so a ``cache.db`` that is not a database is moved aside and the
  manifests are rebuilt from the files; a manifest value of the wrong shape is rebuilt alone.
- A folder this user cannot write opens read-only (SQLite ``mode=ro``, else ``immutable``):
  warm reads work; a store raises a UsageError saying the cache is read-only (exit 2).
- After a crash, the first use of a fingerprint in a process (``_reconcile``) deletes temp
  files whose writer is gone (no ``flock`` held, pid dead), deletes files a compaction or
  clear had retired (listed as ``retired`` in the manifest, in the transaction that unlisted
  them), adopts whole segments written but never committed (a kill or Ctrl-C between rename
  and commit; only once their writer is gone), and finishes an interrupted compaction.

Layout under the cache directory: ``embeddings/meta/`` (diskcache) and
``embeddings/segments/<fingerprint>/*.seg``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import sqlite3
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import diskcache
import numpy as np
import numpy.typing as npt

from alcli.errors import RunError, UsageError

__all__ = ["EmbeddingCache", "default_cache_dir"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAGIC = b"ALCLISEG"
_VERSION = 1
_EMBEDDINGS = 0
_FAILURES = 1
_DTYPES: dict[int, np.dtype[Any]] = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
_DTYPE_CODES = {"float32": 0, "float16": 1}
# magic, version, kind, key_width, rows, dim, dtype, payload_bytes, keys_crc, data_crc
_HEAD = struct.Struct("<8sHHIQIIQII")
_HEAD_CRC = struct.Struct("<I")
_HEADER_SIZE = 64
_ALIGN = 64
_CHUNK_BYTES = 64 << 20  # rows read per call when a segment is read densely
_MAX_VANISHED = 8  # manifest changes survived by one lookup before giving up
_LEASE_S = 600  # an auto-compaction lease held by a killed process expires after this
_ORPHAN_GRACE_S = 3600  # files not in the manifest younger than this may be mid-store
_FINGERPRINT = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
# <time_ns>-<writer pid>-<random>.seg, as _write_segment names them; temp files get a prefix
_SEGMENT_NAME = re.compile(r"[0-9a-f]{16,}-([0-9a-f]{1,16})-[0-9a-f]{12}\.seg")
_TEMP_PREFIX = ".tmp-"
# A file changed within this long of its last stamp may carry the same time stamps (coarse
# file-system clocks: 1-10 ms on Linux, 1-2 s on some file systems), so such a stamp is never
# trusted: the segment is checked again on its next read (git's "racily clean" rule).
_RACY_NS = 2_000_000_000
_VERIFY_CHUNK = 8 << 20  # bytes checksummed per read when a segment's data is verified
_READ_ONLY_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
_META_SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",
    "size_limit": 1 << 62,
    "cull_limit": 0,
    "statistics": 0,
    "disk_min_file_size": 1 << 30,  # manifests inline in SQLite, never side files
}
_MIX = np.uint64(0x9E3779B97F4A7C15)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_MAX_BUCKET_BITS = 26
_MAX_BUCKET_KEYS = 64  # above this, hashes are too skewed for the bucket table

Array = npt.NDArray[Any]


def default_cache_dir() -> Path:
    """Where embeddings live: $ALCLI_CACHE_DIR, else $XDG_CACHE_HOME/alcli, else ~/.cache/alcli."""
    explicit = os.environ.get("ALCLI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "alcli"
    return Path.home() / ".cache" / "alcli"


def manifest_memo_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where ``resolve_pool`` remembers large manifests' items, inside the cache folder."""
    return (Path(directory) if directory is not None else default_cache_dir()) / "manifests"


class _Entry(NamedTuple):
    """One committed segment as the manifest lists it."""

    name: str
    kind: int
    rows: int
    key_width: int
    dim: int
    dtype_code: int
    nbytes: int

    @property
    def data_offset(self) -> int:
        return _data_offset(self.rows, self.key_width)


class _SegmentCorruptError(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class _SegmentVanishedError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _data_offset(rows: int, key_width: int) -> int:
    end = _HEADER_SIZE + rows * key_width
    return -(-end // _ALIGN) * _ALIGN


def _can_write(directory: Path) -> bool:
    """Whether this user may write the index folder and its cache.db (root always may, unless
    the file system itself is read-only, which ``access`` reports too)."""
    db = directory / "cache.db"
    folder = directory if directory.exists() else directory.parent
    return os.access(folder, os.W_OK) and (not db.exists() or os.access(db, os.W_OK))


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _check_fingerprint(fingerprint: str) -> None:
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(
            f"model fingerprint {fingerprint!r} is not a hex string; "
            "pass the fingerprint that alcli.models computes"
        )


# --- keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyGroup:
    """Keys of one length: their positions in the caller's list, raw bytes and 64-bit words."""

    width: int
    positions: npt.NDArray[np.int64]
    raw: npt.NDArray[np.uint8]  # [k, width]
    words: npt.NDArray[np.uint64]  # [k, ceil(width / 8)], zero padded


def _words_of(raw: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    count, width = raw.shape
    if width % 8 == 0 and raw.flags.c_contiguous:
        return raw.view(np.uint64)
    padded = np.zeros((count, -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = raw
    return padded.view(np.uint64)


def _encode_keys(keys: Sequence[str]) -> list[_KeyGroup]:
    """Hex keys -> raw bytes, one vectorised ``fromhex`` per key length (usually just one)."""
    n = len(keys)
    if n == 0:
        return []
    try:
        distinct_lengths = set(map(len, keys))
    except TypeError:
        raise ValueError("cache keys must be hex strings (item keys from alcli.sources)") from None
    if len(distinct_lengths) == 1:
        splits = [(distinct_lengths.pop(), np.arange(n, dtype=np.int64))]
    else:
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
        splits = [(int(v), np.flatnonzero(lengths == v)) for v in np.unique(lengths)]
    groups = []
    for length, positions in splits:
        subset = keys if len(positions) == n else [keys[int(i)] for i in positions]
        try:
            if length == 0 or length % 2:
                raise ValueError("odd length")
            raw_bytes = bytes.fromhex("".join(subset))
        except (ValueError, TypeError):
            raise ValueError(
                f"cache key {subset[0]!r} (or another of length {length}) is not an "
                "even-length hex string; item keys must be hex digests"
            ) from None
        width = length // 2
        if len(raw_bytes) != len(subset) * width:  # fromhex skips whitespace
            raise ValueError(f"a cache key of length {length} contains whitespace; keys are hex")
        raw = np.frombuffer(raw_bytes, dtype=np.uint8).reshape(len(subset), width)
        groups.append(_KeyGroup(width, positions, raw, _words_of(raw)))
    return groups


def _key_hash(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of all key words: a bijective mix per word, then murmur3's finaliser so
    the top bits (the bucket number) are uniform whatever the keys look like."""
    h = words[:, 0].copy()
    for j in range(1, words.shape[1]):
        h ^= h >> np.uint64(31)
        h *= _MIX
        h ^= words[:, j]
    h ^= h >> np.uint64(33)
    h *= _FMIX1
    h ^= h >> np.uint64(33)
    h *= _FMIX2
    h ^= h >> np.uint64(33)
    return h


@dataclass
class _KeyIndex:
    """Every live key of one width, sorted by hash, with its global row id (gid), and a
    bucket table over the hashes' top bits (``starts``) so a query needs no sort or search.

    ``hashes`` keep the top ``64 - index_bits`` bits of ``_key_hash``: the low bits make room
    for the row position in one packed uint64, which ``np.sort`` orders 3x faster than
    ``np.argsort`` orders the hashes (and stably, as the position breaks ties). Keys that
    share a truncated hash are collisions like any other and go to the dict.
    """

    index_bits: np.uint64
    hashes: npt.NDArray[np.uint64]
    words: npt.NDArray[np.uint64]
    gids: npt.NDArray[np.int64]
    collisions: dict[int, dict[bytes, int]]
    collision_hashes: npt.NDArray[np.uint64]
    bucket_shift: np.uint64
    starts: npt.NDArray[np.int64] | None  # None: buckets too uneven, search instead

    @property
    def items(self) -> int:
        return len(self.hashes) + sum(len(d) for d in self.collisions.values())

    @classmethod
    def build(cls, words: npt.NDArray[np.uint64], gids: npt.NDArray[np.int64]) -> _KeyIndex:
        """Index keys given in storage order; of equal keys the last stored one wins."""
        n = len(words)
        index_bits = np.uint64(max(n - 1, 1).bit_length())
        packed = (_key_hash(words) >> index_bits) << index_bits
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        order = (packed & ((np.uint64(1) << index_bits) - np.uint64(1))).astype(np.intp)
        hashes = packed >> index_bits
        words, gids = np.take(words, order, axis=0), gids[order]
        collisions: dict[int, dict[bytes, int]] = {}
        same_key = cls._same_key_as_next(hashes, words)
        clash = (hashes[1:] == hashes[:-1]) & ~same_key
        if clash.any():  # distinct keys with one hash: resolve those through a dict
            in_dict = np.isin(hashes, np.unique(hashes[1:][clash]))
            members = np.flatnonzero(in_dict)
            for i in members[np.argsort(gids[members], kind="stable")]:
                collisions.setdefault(int(hashes[i]), {})[words[i].tobytes()] = int(gids[i])
            keep = ~in_dict
            hashes, words, gids = hashes[keep], words[keep], gids[keep]
            same_key = cls._same_key_as_next(hashes, words)
        if same_key.any():  # the same key stored more than once: keep the last
            last = np.append(~same_key, True)
            hashes, words, gids = hashes[last], words[last], gids[last]
        collision_hashes = np.array(sorted(collisions), dtype=np.uint64)
        bits = min(max(len(hashes).bit_length(), 1), _MAX_BUCKET_BITS)  # ~1 key per bucket
        shift = np.uint64(64 - bits) - index_bits
        counts = np.bincount((hashes >> shift).astype(np.intp), minlength=1 << bits)
        starts: npt.NDArray[np.int64] | None = None
        if len(hashes) and counts.max() <= _MAX_BUCKET_KEYS:
            starts = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=starts[1:])
        return cls(index_bits, hashes, words, gids, collisions, collision_hashes, shift, starts)

    @staticmethod
    def _same_key_as_next(
        hashes: npt.NDArray[np.uint64], words: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.bool_]:
        same = hashes[1:] == hashes[:-1]
        at = np.flatnonzero(same)
        if len(at):
            same[at] = (np.take(words, at + 1, axis=0) == np.take(words, at, axis=0)).all(axis=1)
        return same

    def find(self, words: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """gid of each query key, -1 where absent."""
        found = np.full(len(words), -1, dtype=np.int64)
        if len(words) == 0 or self.items == 0:
            return found
        hashes = _key_hash(words) >> self.index_bits
        if len(self.hashes):
            at = self._positions(hashes)
            queries = np.flatnonzero(at >= 0)
            at = at[queries]
            stored = np.take(self.words, at, axis=0)
            same = stored[:, 0] == words[queries, 0]
            for j in range(1, words.shape[1]):
                same &= stored[:, j] == words[queries, j]
            found[queries[same]] = self.gids[at[same]]
        if self.collisions:
            for q in np.flatnonzero(np.isin(hashes, self.collision_hashes)):
                gid = self.collisions[int(hashes[q])].get(words[q].tobytes())
                if gid is not None:
                    found[q] = gid
        return found

    def _positions(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Where each query hash sits in ``self.hashes``, -1 where it does not."""
        at = np.full(len(hashes), -1, dtype=np.int64)
        if self.starts is None:  # sorted queries search ~7x faster than random ones
            order = np.argsort(hashes)
            pos = np.searchsorted(self.hashes, hashes[order])
            pos = np.minimum(pos, len(self.hashes) - 1)
            hit = self.hashes[pos] == hashes[order]
            at[order[hit]] = pos[hit]
            return at
        bucket = (hashes >> self.bucket_shift).astype(np.intp)
        pos, end = self.starts[bucket], self.starts[bucket + 1]
        active = np.flatnonzero(pos < end)
        pos, end = pos[active], end[active]
        while len(active):  # step through each bucket's (sorted) hashes, all queries at once
            here = self.hashes[pos]
            wanted = hashes[active]
            hit = here == wanted
            at[active[hit]] = pos[hit]
            more = (here < wanted) & (pos + 1 < end)
            active, pos, end = active[more], pos[more] + 1, end[more]
        return at

    def entries(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        """Every live (words, gid), including hash collisions."""
        if not self.collisions:
            return self.words, self.gids
        extra_words = [
            np.frombuffer(k, dtype=np.uint64) for d in self.collisions.values() for k in d
        ]
        extra_gids = [g for d in self.collisions.values() for g in d.values()]
        return (
            np.concatenate([self.words, np.stack(extra_words)]),
            np.concatenate([self.gids, np.array(extra_gids, dtype=np.int64)]),
        )


# --- segment files ----------------------------------------------------------------------


def _pack_header(
    kind: int,
    key_width: int,
    rows: int,
    dim: int,
    dtype_code: int,
    payload_bytes: int,
    keys_crc: int,
    data_crc: int,
) -> bytes:
    head = _HEAD.pack(
        _MAGIC, _VERSION, kind, key_width, rows, dim, dtype_code, payload_bytes, keys_crc, data_crc
    )
    return (head + _HEAD_CRC.pack(zlib.crc32(head))).ljust(_HEADER_SIZE, b"\0")


def _unpack_header(head: bytes) -> tuple[Any, ...] | None:
    """(version, kind, key_width, rows, dim, dtype_code, payload_bytes, keys_crc, data_crc),
    or None when the bytes are not a segment header (wrong magic, failed header checksum)."""
    if len(head) < _HEADER_SIZE:
        return None
    fields = _HEAD.unpack_from(head)
    (stored_crc,) = _HEAD_CRC.unpack_from(head, _HEAD.size)
    if fields[0] != _MAGIC or zlib.crc32(head[: _HEAD.size]) != stored_crc:
        return None
    return tuple(fields[1:])


def _writer_gone(name: str, mtime: float) -> bool:
    """Whether the process that wrote a segment or temp file can no longer be about to commit
    it: its pid (in the name) is dead on this host, or the file is older than any live write.
    A live pid may be an unrelated process that reused it; the age rule covers that case."""
    if time.time() - mtime > _ORPHAN_GRACE_S:
        return True
    match = _SEGMENT_NAME.fullmatch(name.removeprefix(_TEMP_PREFIX))
    if match is None:
        return False
    return not _pid_alive(int(match.group(1), 16))


def _remove_if_abandoned(path: Path) -> bool:
    """Delete a temp segment whose writer is gone: nobody holds its lock (a writer holds it
    from creating the file to closing it) and its pid is dead, or it is older than any write."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        if not _writer_gone(path.name, os.fstat(fd).st_mtime):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid at all
        return True
    return True


def _byte_view(data: Array | bytes) -> memoryview:
    """The bytes of ``data`` without a copy (arrays must be C-contiguous)."""
    if isinstance(data, bytes):
        return memoryview(data)
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    return data.data.cast("B")


def _write_segment(
    directory: Path,
    *,
    kind: int,
    raw_keys: npt.NDArray[np.uint8] | None,
    rows: int,
    dim: int,
    dtype_code: int,
    payload: Iterable[Array | bytes],
    payload_bytes: int,
    durable: bool,
) -> _Entry:
    """Write a whole segment under a temp name, then rename: readers never see half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():016x}-{os.getpid():x}-{uuid.uuid4().hex[:12]}.seg"
    temp = directory / f".tmp-{name}"
    key_width = 0 if raw_keys is None else raw_keys.shape[1]
    keys_bytes = b"" if raw_keys is None else np.ascontiguousarray(raw_keys).tobytes()
    data_offset = _data_offset(rows, key_width)
    try:
        with open(temp, "xb") as f:
            # Held until the file is closed: a temp file nobody holds is abandoned (_reconcile).
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.write(bytes(_HEADER_SIZE))
            f.write(keys_bytes)
            f.write(bytes(data_offset - _HEADER_SIZE - len(keys_bytes)))
            data_crc, written = 0, 0
            for piece in payload:
                view = _byte_view(piece)
                f.write(view)
                data_crc = zlib.crc32(view, data_crc)
                written += len(view)
            if written != payload_bytes:
                raise AssertionError(f"segment payload is {written} bytes, not {payload_bytes}")
            f.seek(0)
            f.write(
                _pack_header(
                    kind,
                    key_width,
                    rows,
                    dim,
                    dtype_code,
                    payload_bytes,
                    zlib.crc32(keys_bytes),
                    data_crc,
                )
            )
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, directory / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _Entry(name, kind, rows, key_width, dim, dtype_code, data_offset + payload_bytes)


class _Segment:
    """An open segment file whose header and size match what the manifest says."""

    def __init__(self, path: Path, entry: _Entry) -> None:
        self.entry = entry
        try:
            self.file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise _SegmentVanishedError(entry.name) from None
        except OSError as exc:
            raise _SegmentCorruptError(entry.name, f"cannot be opened ({exc.strerror})") from None
        try:
            self._check_header()
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> _Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def _corrupt(self, reason: str) -> _SegmentCorruptError:
        return _SegmentCorruptError(self.entry.name, reason)

    def _check_header(self) -> None:
        fields = _unpack_header(self._read_at(0, _HEADER_SIZE))
        if fields is None:
            raise self._corrupt("bad header (not a segment, or overwritten)")
        version, kind, key_width, rows, dim, dtype_code, payload_bytes, keys_crc, data_crc = fields
        e = self.entry
        if version != _VERSION or (kind, key_width, rows, dim, dtype_code) != (
            e.kind,
            e.key_width,
            e.rows,
            e.dim,
            e.dtype_code,
        ):
            raise self._corrupt("header disagrees with the manifest")
        size = os.fstat(self.file.fileno()).st_size
        if size != e.nbytes or e.data_offset + payload_bytes != e.nbytes:
            raise self._corrupt(f"{size} bytes on disk, {e.nbytes} expected (truncated?)")
        self.keys_crc: int = keys_crc
        self.data_crc: int = data_crc
        self.payload_bytes: int = payload_bytes

    def _read_at(self, offset: int, size: int) -> bytes:
        self.file.seek(offset)
        data = self.file.read(size) or b""
        if len(data) != size:
            raise self._corrupt(f"short read at byte {offset} (truncated?)")
        return data

    def read_keys(self) -> npt.NDArray[np.uint8]:
        e = self.entry
        raw = self._read_at(_HEADER_SIZE, e.rows * e.key_width)
        if zlib.crc32(raw) != self.keys_crc:
            raise self._corrupt("keys checksum mismatch")
        return np.frombuffer(raw, dtype=np.uint8).reshape(e.rows, e.key_width)

    @property
    def dtype(self) -> np.dtype[Any]:
        return _DTYPES[self.entry.dtype_code]

    @property
    def row_bytes(self) -> int:
        return self.entry.dim * self.dtype.itemsize

    def read_rows_into(self, start_row: int, buffer: Array) -> None:
        """Fill a C-contiguous [k, dim] buffer of the segment's dtype from row ``start_row``."""
        if not buffer.flags.c_contiguous:
            raise AssertionError("read_rows_into needs a C-contiguous buffer")
        view = _byte_view(buffer)
        self.file.seek(self.entry.data_offset + start_row * self.row_bytes)
        done = 0
        while done < len(view):
            got = self.file.readinto(view[done:])
            if not got:
                raise self._corrupt("data ends early (truncated?)")
            done += got

    def memmap(self) -> Array:
        return np.memmap(
            self.file,
            dtype=self.dtype,
            mode="r",
            offset=self.entry.data_offset,
            shape=(self.entry.rows, self.entry.dim),
        )

    def checked_chunks(self, chunk_rows: int) -> Iterator[tuple[int, Array]]:
        """(first row, rows) chunks of the whole data block; the data checksum is verified
        before the last chunk is handed out, so a consumer never commits unchecked rows."""
        crc = 0
        rows = self.entry.rows
        pending: tuple[int, Array] | None = None
        for start in range(0, rows, chunk_rows):
            chunk = np.empty((min(chunk_rows, rows - start), self.entry.dim), dtype=self.dtype)
            self.read_rows_into(start, chunk)
            crc = zlib.crc32(_byte_view(chunk), crc)
            if pending is not None:
                yield pending
            pending = (start, chunk)
        if crc != self.data_crc:
            raise self._corrupt("data checksum mismatch")
        if pending is not None:
            yield pending

    def read_payload(self) -> bytes:
        data = self._read_at(self.entry.data_offset, self.payload_bytes)
        if zlib.crc32(data) != self.data_crc:
            raise self._corrupt("data checksum mismatch")
        return data

    def stamp(self) -> tuple[int, int, int, int]:
        """What changes whenever the file's bytes may have: inode, size, mtime and ctime (which
        no user can set back)."""
        info = os.fstat(self.file.fileno())
        return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def verify_data(self) -> None:
        """Read the whole data block and compare its checksum: rows overwritten or permuted in
        place leave the size and the header as they were, but not the checksum (crc32 runs at
        about 2.5 GB/s here; blake2b 0.6, sha1 1.3)."""
        buffer = memoryview(bytearray(min(_VERIFY_CHUNK, max(self.payload_bytes, 1))))
        self.file.seek(self.entry.data_offset)
        crc, left = 0, self.payload_bytes
        while left:
            got = self.file.readinto(buffer[: min(len(buffer), left)])
            if not got:
                raise self._corrupt("data ends early (truncated?)")
            crc = zlib.crc32(buffer[:got], crc)
            left -= got
        if crc != self.data_crc:
            raise self._corrupt("data checksum mismatch (its bytes changed on disk)")


def _entry_from_file(path: Path) -> _Entry:
    """The manifest entry that a whole segment file stands for, read from its header and size,
    keys checked: how a segment the manifest lacks is adopted, and a lost index rebuilt. The
    data checksum is checked on the segment's first read, as for any segment not stamped."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise _SegmentVanishedError(path.name) from None
    except OSError as exc:
        raise _SegmentCorruptError(path.name, f"cannot be opened ({exc.strerror})") from None
    fields = _unpack_header(head)
    if fields is None:
        raise _SegmentCorruptError(path.name, "bad header (not a segment, or overwritten)")
    version, kind, key_width, rows, dim, dtype_code = fields[:6]
    usable = kind == _FAILURES or (kind == _EMBEDDINGS and key_width > 0 and dim > 0)
    if version != _VERSION or not usable or dtype_code not in _DTYPES:
        raise _SegmentCorruptError(path.name, "not a segment this version of alcli can read")
    entry = _Entry(path.name, kind, rows, key_width, dim, dtype_code, size)
    with _Segment(path, entry) as segment:  # checks the size against the header
        if kind == _EMBEDDINGS:
            segment.read_keys()
    return entry


def _failure_records(segment: _Segment) -> tuple[list[str], list[str]]:
    """(keys, reasons) of a failure-record segment, checksum verified."""
    try:
        record = json.loads(segment.read_payload())
        keys, reasons = record["keys"], record["reasons"]
        if len(keys) != segment.entry.rows or len(reasons) != segment.entry.rows:
            raise ValueError("row count")
    except (ValueError, KeyError, TypeError):
        raise _SegmentCorruptError(segment.entry.name, "failure records do not parse") from None
    return keys, reasons


# --- one fingerprint as of one manifest -------------------------------------------------


@dataclass
class _View:
    """A fingerprint's committed segments (minus known-bad ones) and the key index over them."""

    segments: tuple[_Entry, ...]
    bad: frozenset[str]
    embedding_segments: list[_Entry]
    bases: npt.NDArray[np.int64]  # gid of each embedding segment's first row; last = total
    indexes: dict[int, _KeyIndex]  # key width -> index
    failures: dict[str, str] | None = field(default=None)

    @property
    def dim(self) -> int | None:
        return self.embedding_segments[0].dim if self.embedding_segments else None

    def segment_of(self, gids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.searchsorted(self.bases, gids, side="right").astype(np.int64) - 1


def _manifest_key(fingerprint: str) -> str:
    return f"manifest:{fingerprint}"


def _lease_key(fingerprint: str) -> str:
    return f"compacting:{fingerprint}"


def _verified_key(fingerprint: str) -> str:
    return f"verified:{fingerprint}"


def _entries(manifest: dict[str, Any] | None) -> tuple[_Entry, ...]:
    return tuple(_Entry._make(t) for t in manifest["segments"]) if manifest else ()


def _checked_manifest(value: Any) -> dict[str, Any]:
    """A stored manifest (None: nothing stored yet) checked field by field; ValueError says
    what is wrong. The index is a file that a disk or a user can damage like any other, and a
    wrong name or number here would read the wrong bytes."""
    if value is None:
        return {"version": 1, "segments": [], "retired": []}
    if not isinstance(value, dict) or not isinstance(value.get("segments"), list | tuple):
        raise ValueError(f"a {type(value).__name__} where a manifest should be")
    segments = []
    for raw in value["segments"]:
        if not (
            isinstance(raw, list | tuple)
            and len(raw) == len(_Entry._fields)
            and isinstance(raw[0], str)
            and _SEGMENT_NAME.fullmatch(raw[0])
            and all(isinstance(v, int) and v >= 0 for v in raw[1:])
            and raw[1] in (_EMBEDDINGS, _FAILURES)
            and raw[5] in _DTYPES
        ):
            raise ValueError(f"a malformed segment entry {str(raw)[:60]}")
        segments.append(tuple(raw))
    if len({t[0] for t in segments}) != len(segments):
        raise ValueError("a segment listed twice")
    retired = value.get("retired", [])
    if not isinstance(retired, list | tuple) or not all(isinstance(n, str) for n in retired):
        raise ValueError("a malformed list of retired segments")
    return {**value, "version": 1, "segments": segments, "retired": list(retired)}


class _ReadOnlyMeta:
    """The manifests read straight from SQLite, for a cache folder this user cannot write.

    ``diskcache.Cache`` writes its settings as it opens, so it cannot open a read-only folder;
    reading needs only diskcache's encoding of keys and values (``Disk``). A WAL database with
    no ``-shm`` file next to it opens only as ``immutable``, which is safe here: nobody can
    write this folder. Manifests rebuilt from the segments (the index is damaged too) live in
    ``overrides``, in memory.
    """

    def __init__(self, directory: Path, *, database: bool = True) -> None:
        self.overrides: dict[str, Any] = {}
        self._disk = diskcache.Disk(str(directory))
        self._db: sqlite3.Connection | None = None
        path = directory / "cache.db"
        if not database or not path.is_file():
            return
        error: sqlite3.OperationalError | None = None
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True)
            try:
                db.execute("SELECT key FROM Cache LIMIT 1").fetchall()
            except sqlite3.OperationalError as exc:
                db.close()
                error = exc
                continue
            except BaseException:
                db.close()
                raise
            self._db = db
            return
        assert error is not None
        raise error

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.overrides:
            return self.overrides[key]
        if self._db is None:
            return default
        db_key, raw = self._disk.put(key)
        row = self._db.execute(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
            " AND (expire_time IS NULL OR expire_time > ?)",
            (db_key, raw, time.time()),
        ).fetchone()
        return default if row is None else self._disk.fetch(row[0], row[1], row[2], False)

    def iterkeys(self) -> Iterator[Any]:
        yield from self.overrides
        if self._db is not None:
            for key, raw in self._db.execute("SELECT key, raw FROM Cache ORDER BY rowid"):
                decoded = self._disk.get(key, raw)
                if decoded not in self.overrides:
                    yield decoded

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class EmbeddingCache:
    """Embeddings per (model fingerprint, item key), and the items that failed to embed.

    Safe to share between processes and threads. ``storage_dtype="float16"`` halves disk and
    read time; lookups always return float32. ``durable=False`` skips the fsync per segment
    (tests, benchmarks). ``auto_compact_segments`` small segments (data under
    ``small_segment_bytes``) trigger a merge when a store adds one more.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        storage_dtype: str = "float32",
        durable: bool = True,
        auto_compact_segments: int = 64,
        small_segment_bytes: int = 32 << 20,
    ) -> None:
        if storage_dtype not in _DTYPE_CODES:
            raise ValueError(f"storage_dtype {storage_dtype!r} is not one of float32, float16")
        if auto_compact_segments < 2:
            raise ValueError("auto_compact_segments must be at least 2")
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._root = self.directory / "embeddings"
        self._dtype_code = _DTYPE_CODES[storage_dtype]
        self._durable = durable
        self._auto_compact_segments = auto_compact_segments
        self._small_segment_bytes = small_segment_bytes
        self._lock = threading.RLock()
        self._views: dict[str, _View] = {}
        self._words: dict[tuple[str, str], npt.NDArray[np.uint64]] = {}
        self._bad: dict[str, set[str]] = {}
        # segment -> file stamp at its last (non-racy) data check, in this process
        self._trusted: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        self._touched: set[str] = set()  # fingerprints already tidied after crashes
        self._in_transaction = 0  # a damaged index is not replaced under an open transaction
        self._read_only: str | None = None  # why this cache cannot be written, once known
        self._meta: Any = None  # diskcache.Cache, or _ReadOnlyMeta for a read-only folder
        self._meta, damage = self._open_meta()
        if damage is not None:
            self._rebuild_index(damage)

    # --- context manager ---

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._views.clear()
            self._words.clear()
            self._meta.close()

    # --- opening: read-only folders and a damaged index ---

    @property
    def index_path(self) -> Path:
        """The SQLite file that lists each fingerprint's segments (diskcache's cache.db)."""
        return self._root / "meta" / "cache.db"

    @property
    def read_only(self) -> str | None:
        """Why this cache cannot be written (warm reads still work), or None."""
        return self._read_only

    def _open_meta(self) -> tuple[Any, str | None]:
        """(manifest store, what was wrong with cache.db or None). A folder this user cannot
        write opens read-only; a cache.db that is not a database is set aside and the index is
        rebuilt from the segment files, which carry their own keys, shape and checksums."""
        directory = self._root / "meta"
        try:
            (self._root / "segments").mkdir(parents=True, exist_ok=True)
            return diskcache.Cache(str(directory), **_META_SETTINGS), None
        except OSError as exc:
            if exc.errno not in _READ_ONLY_ERRNOS:
                raise RunError(
                    f"cannot open the embedding cache at {self._root}: {exc.strerror or exc}",
                    hint="set ALCLI_CACHE_DIR to a writable directory",
                ) from exc
            self._read_only = exc.strerror or str(exc)
        except sqlite3.OperationalError as exc:
            if _can_write(directory):
                raise RunError(
                    f"cannot open the embedding-cache index {self.index_path}: {exc}",
                    hint="run the command again; another alcli may hold it",
                ) from exc
            self._read_only = "the folder is not writable"
        except sqlite3.DatabaseError as exc:
            if _can_write(directory):
                return self._replace_index(directory, exc), str(exc)
            self._read_only = "the folder is not writable"
        try:
            return _ReadOnlyMeta(directory), None
        except sqlite3.DatabaseError as exc:
            return _ReadOnlyMeta(directory, database=False), str(exc)

    def _replace_index(self, directory: Path, problem: sqlite3.DatabaseError) -> Any:
        """Set a damaged cache.db aside (kept for inspection) and start an empty one; under a
        lock, so that two processes healing at once do not set each other's new index aside."""
        damaged = _inode(directory / "cache.db")
        with open(self._root / "meta.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            if _inode(directory / "cache.db") != damaged:  # another process replaced it
                return diskcache.Cache(str(directory), **_META_SETTINGS)
            aside = directory.with_name(f"meta.unreadable-{time.time_ns():x}")
            directory.rename(aside)
            log.warning(
                "the embedding-cache index %s is unreadable (%s); moved it to %s and rebuilt "
                "the index from the segment files (anything they lack will be embedded again)",
                self.index_path,
                problem,
                aside,
            )
            return diskcache.Cache(str(directory), **_META_SETTINGS)

    def _rebuild_index(self, problem: str) -> None:
        """List every whole segment on disk again, per fingerprint (after _replace_index, or
        in memory when a read-only folder holds an unreadable cache.db)."""
        if self._read_only is not None:
            log.warning(
                "the embedding-cache index %s is unreadable (%s) and the cache is read-only: "
                "reading the segment files without it",
                self.index_path,
                problem,
            )
        folder = self._root / "segments"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_dir() and _FINGERPRINT.fullmatch(path.name):
                self._adopt(path.name, everything=True)

    def _meta_get(self, key: str) -> Any:
        """``meta.get``; a cache.db found damaged while running is replaced as on opening."""
        try:
            return self._meta.get(key)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            if self._in_transaction:
                raise
            self._meta.close()
            self._views.clear()
            if self._read_only is None and _can_write(self._root / "meta"):
                self._meta = self._replace_index(self._root / "meta", exc)
            else:
                self._read_only = self._read_only or "its damaged index cannot be replaced"
                self._meta = _ReadOnlyMeta(self._root / "meta", database=False)
            self._rebuild_index(str(exc))
            return self._meta.get(key)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if isinstance(self._meta, _ReadOnlyMeta):  # rebuilt manifests only, in memory
            yield
        else:
            self._in_transaction += 1
            try:
                with self._meta.transact(retry=True):
                    yield
            finally:
                self._in_transaction -= 1

    def _manifest(self, fingerprint: str) -> dict[str, Any]:
        """The fingerprint's manifest, checked; one that is not a manifest (a value of the
        wrong type, a malformed entry) is rebuilt from the segment files, with a warning."""
        key = _manifest_key(fingerprint)
        try:
            return _checked_manifest(self._meta_get(key))
        except (sqlite3.OperationalError, diskcache.Timeout):
            raise
        except Exception as exc:  # ValueError, or a value that does not unpickle
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
        log.warning(
            "the embedding-cache index %s holds %s for model %s; rebuilt that list of "
            "segments from the files in %s",
            self.index_path,
            reason,
            fingerprint,
            self._segment_dir(fingerprint),
        )
        return self._adopt(fingerprint, everything=True, reset=True)

    def _put_manifest(self, fingerprint: str, manifest: dict[str, Any]) -> None:
        if isinstance(self._meta, _ReadOnlyMeta):
            self._meta.overrides[_manifest_key(fingerprint)] = manifest
        else:
            self._meta.set(_manifest_key(fingerprint), manifest)

    def check_writable(self) -> None:
        """Raise the read-only UsageError now, before work whose results could not be kept."""
        if self._read_only is not None:
            raise self._read_only_error(self._read_only)

    def _read_only_error(self, why: str) -> UsageError:
        return UsageError(
            f"the embedding cache at {self.directory} is read-only ({why}): cached items can "
            "be read, new ones cannot be stored",
            hint="pass --cache-dir or set ALCLI_CACHE_DIR to a writable folder",
        )

    # --- public API ---

    def lookup(self, fingerprint: str, keys: Sequence[str]) -> tuple[Array, Array]:
        """(embeddings [n, D] float32 with zero rows where missing, found mask [n]).

        When nothing is cached for the fingerprint, the embeddings are an [n, 0] array. When
        every key is found as one in-order run of one segment, the result is a read-only
        memmap of that segment (zero copy); otherwise a fresh array. Do not write into it.
        """
        _check_fingerprint(fingerprint)
        groups = _encode_keys(keys)
        n = len(keys)
        with self._lock:
            return self._retrying(fingerprint, lambda: self._lookup(fingerprint, groups, n))

    def contains(self, fingerprint: str, keys: Sequence[str]) -> Array:
        """The found mask [n] of ``lookup`` without gathering a row: what ``alcli embed``
        needs (counts), at no memory per item. The segments holding found keys are checked
        as ``lookup`` would check them, so a corrupt one is set aside (its keys not found)."""
        _check_fingerprint(fingerprint)
        groups, n = _encode_keys(keys), len(keys)

        def found() -> Array:
            view = self._view(fingerprint)
            gids = np.full(n, -1, dtype=np.int64)
            for group in groups:
                index = view.indexes.get(group.width)
                if index is not None:
                    gids[group.positions] = index.find(group.words)
            for i in np.unique(view.segment_of(gids[gids >= 0])):
                entry = view.embedding_segments[int(i)]
                with _Segment(self._segment_path(fingerprint, entry.name), entry) as segment:
                    self._check_data(fingerprint, segment)
            return gids >= 0

        with self._lock:
            return self._retrying(fingerprint, found)

    def store(self, fingerprint: str, keys: Sequence[str], embeddings: Array) -> None:
        """Append one batch as a segment; it is durable and visible once this returns."""
        _check_fingerprint(fingerprint)
        data = np.asarray(embeddings)
        if data.ndim != 2 or data.shape[0] != len(keys):
            raise ValueError(
                f"embeddings have shape {data.shape}, expected ({len(keys)}, dim): one row per key"
            )
        if data.shape[1] == 0:
            raise ValueError("embeddings have zero columns; nothing to store")
        if len(keys) == 0:
            return
        dim = int(data.shape[1])
        self._check_dim(fingerprint, dim)
        data = np.ascontiguousarray(data, dtype=_DTYPES[self._dtype_code])
        groups = _encode_keys(keys)
        with self._lock, self._writing():
            self._first_touch(fingerprint)
            written: list[tuple[_Entry, npt.NDArray[np.uint64]]] = []
            try:
                for group in groups:
                    rows = data if len(group.positions) == len(data) else data[group.positions]
                    entry = _write_segment(
                        self._segment_dir(fingerprint),
                        kind=_EMBEDDINGS,
                        raw_keys=group.raw,
                        rows=len(rows),
                        dim=dim,
                        dtype_code=self._dtype_code,
                        payload=[rows],
                        payload_bytes=rows.nbytes,
                        durable=self._durable,
                    )
                    written.append((entry, group.words))
                manifest = self._append(fingerprint, [e for e, _ in written], dim)
            except BaseException as exc:
                self._undo_or_keep(fingerprint, [e for e, _ in written], dim, exc)
                raise
            for entry, words in written:
                self._words[(fingerprint, entry.name)] = words
            self._maybe_auto_compact(fingerprint, _entries(manifest))

    def store_failures(self, fingerprint: str, keys: Sequence[str], reasons: Sequence[str]) -> None:
        """Record why items could not be embedded, so a rerun can skip or report them."""
        _check_fingerprint(fingerprint)
        if len(keys) != len(reasons):
            raise ValueError(f"{len(keys)} keys but {len(reasons)} reasons: give one per key")
        if len(keys) == 0:
            return
        _encode_keys(keys)  # validates
        with self._lock, self._writing():
            self._first_touch(fingerprint)
            entry = self._write_failures(
                fingerprint, [str(k).lower() for k in keys], [str(r) for r in reasons]
            )
            try:
                manifest = self._append(fingerprint, [entry], None)
            except BaseException as exc:
                self._undo_or_keep(fingerprint, [entry], None, exc)
                raise
            self._maybe_auto_compact(fingerprint, _entries(manifest))

    def lookup_failures(self, fingerprint: str, keys: Sequence[str]) -> dict[str, str]:
        """{key: reason} for the given keys that have a recorded failure (latest reason)."""
        _check_fingerprint(fingerprint)
        with self._lock:
            _, failures = self._retrying(fingerprint, lambda: self._current(fingerprint))
        if not failures:
            return {}
        result = {}
        for key in keys:
            reason = failures.get(key.lower())
            if reason is not None:
                result[key] = reason
        return result

    def stats(self, fingerprint: str | None = None) -> dict[str, dict[str, Any]]:
        """{fingerprint: {dim, items, rows, failures, segments, bytes}}; all of them by default.

        ``items`` counts distinct keys; ``rows`` counts stored rows, including rows a later
        store of the same key superseded (compaction drops those).
        """
        with self._lock:
            fingerprints = [fingerprint] if fingerprint is not None else self._fingerprints()
            result = {}
            for fp in fingerprints:
                _check_fingerprint(fp)
                view, failures = self._retrying(fp, partial(self._current, fp))
                result[fp] = {
                    "dim": view.dim,
                    "items": sum(index.items for index in view.indexes.values()),
                    "rows": sum(e.rows for e in view.embedding_segments),
                    "failures": len(failures),
                    "segments": len(view.segments),
                    "bytes": sum(e.nbytes for e in view.segments),
                }
            return result

    def verify(self, fingerprint: str | None = None) -> list[dict[str, Any]]:
        """Read every byte of every listed segment and check its checksums (``alcli cache
        verify``), whatever the stamps say: damage that left a file's times alone, such as
        bit rot, shows only here. One row per segment; corrupt ones are set aside as a read
        sets them aside, so their items are embedded again by the next run."""
        with self._lock:
            fingerprints = [fingerprint] if fingerprint is not None else self._fingerprints()
            report = []
            for fp in fingerprints:
                _check_fingerprint(fp)
                self._first_touch(fp)
                bad = {}
                for entry in _entries(self._manifest(fp)):
                    reason = self._verify_segment(fp, entry)
                    if reason is not None:
                        bad[entry.name] = reason
                    report.append(
                        {
                            "fingerprint": fp,
                            "file": str(self._segment_path(fp, entry.name)),
                            "kind": "embeddings" if entry.kind == _EMBEDDINGS else "failures",
                            "rows": entry.rows,
                            "ok": reason is None,
                            "reason": reason,
                        }
                    )
                for name, reason in bad.items():
                    self._mark_bad(fp, name, reason, quiet=True)
                if bad and self._read_only is None:
                    with self._writing():
                        self._compact(fp, small_only=True)  # unlists them, sets the files aside
            return report

    def _verify_segment(self, fingerprint: str, entry: _Entry) -> str | None:
        """Why a segment is unusable, every byte read; None when it is whole."""
        try:
            with _Segment(self._segment_path(fingerprint, entry.name), entry) as segment:
                if entry.kind == _FAILURES:
                    _failure_records(segment)
                else:
                    segment.read_keys()
                    self._check_data(fingerprint, segment, always=True)
        except _SegmentCorruptError as exc:
            return exc.reason
        except _SegmentVanishedError:
            if entry.name in {e.name for e in _entries(self._manifest(fingerprint))}:
                return "listed in the index but missing"
        return None

    def compact(self, fingerprint: str) -> None:
        """Merge all of a fingerprint's segments into one (and its failure records into one),
        dropping superseded rows and segments that fail their checks."""
        _check_fingerprint(fingerprint)
        with self._lock, self._writing():
            self._compact(fingerprint, small_only=False)

    def clear(self, fingerprint: str | None = None) -> None:
        """Forget one fingerprint's embeddings and failures, or everything."""
        with self._lock, self._writing():
            if fingerprint is not None:
                _check_fingerprint(fingerprint)
                fingerprints = [fingerprint]
            else:
                on_disk = (self._root / "segments").iterdir()
                fingerprints = [
                    *self._fingerprints(),
                    *(p.name for p in on_disk if p.is_dir() and _FINGERPRINT.fullmatch(p.name)),
                ]
            for fp in dict.fromkeys(fingerprints):
                directory = self._segment_dir(fp)
                files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
                # Retire every file first, so that a crash before the last unlink cannot
                # have the next open adopt (resurrect) what was being cleared.
                with self._transaction():
                    self._meta.set(
                        _manifest_key(fp), {"version": 1, "segments": [], "retired": files}
                    )
                    self._meta.delete(_verified_key(fp))
                self._views.pop(fp, None)
                self._bad.pop(fp, None)
                for memo in (self._words, self._trusted):
                    for key in [k for k in memo if k[0] == fp]:
                        del memo[key]
                for name in files:
                    (directory / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # a concurrent store just wrote into it
                    directory.rmdir()
                with self._transaction():
                    self._meta.delete(_manifest_key(fp))

    # --- reading ---

    def _lookup(self, fingerprint: str, groups: list[_KeyGroup], n: int) -> tuple[Array, Array]:
        view = self._view(fingerprint)
        dim = view.dim
        if dim is None:
            return np.zeros((n, 0), dtype=np.float32), np.zeros(n, dtype=bool)
        gids = np.full(n, -1, dtype=np.int64)
        for group in groups:
            index = view.indexes.get(group.width)
            if index is not None:
                gids[group.positions] = index.find(group.words)
        found = gids >= 0
        if n and found.all():
            mapped = self._mapped_run(fingerprint, view, gids)
            if mapped is not None:
                return mapped, found
        out = np.zeros((n, dim), dtype=np.float32)
        queries = np.flatnonzero(found)
        wanted = gids[queries]
        if len(wanted) > 1 and not (wanted[1:] >= wanted[:-1]).all():
            order = np.argsort(wanted, kind="stable")
            wanted, queries = wanted[order], queries[order]
        cuts = np.searchsorted(wanted, view.bases)
        for i, entry in enumerate(view.embedding_segments):
            a, b = int(cuts[i]), int(cuts[i + 1])
            if a < b:
                self._read_rows(fingerprint, entry, wanted[a:b] - view.bases[i], queries[a:b], out)
        return out, found

    def _mapped_run(
        self, fingerprint: str, view: _View, gids: npt.NDArray[np.int64]
    ) -> Array | None:
        """A read-only memmap of the rows when the keys are one run of one float32 segment.

        That is the common warm case (a pool embedded in order, then compacted), and on this
        kind of VM it matters: faulting in a fresh 2 GiB array costs 5-9 s, while mapping the
        page-cached segment costs about 1.3 s for the first full pass over it.
        """
        first, last = int(gids[0]), int(gids[-1])
        if last - first != len(gids) - 1 or (len(gids) > 1 and not (np.diff(gids) == 1).all()):
            return None
        i = int(view.segment_of(np.array([first]))[0])
        entry = view.embedding_segments[i]
        start = first - int(view.bases[i])
        if start + len(gids) > entry.rows or _DTYPES[entry.dtype_code] != np.dtype("<f4"):
            return None
        with _Segment(self._segment_path(fingerprint, entry.name), entry) as segment:
            self._check_data(fingerprint, segment)
            return segment.memmap()[start : start + len(gids)]

    def _read_rows(
        self,
        fingerprint: str,
        entry: _Entry,
        rows: npt.NDArray[np.int64],
        queries: npt.NDArray[np.int64],
        out: Array,
    ) -> None:
        """out[queries] = segment rows ``rows`` (ascending): contiguous reads when dense,
        straight into ``out`` when the rows land in order, a memmap gather when sparse."""
        with _Segment(self._segment_path(fingerprint, entry.name), entry) as segment:
            self._check_data(fingerprint, segment)
            if len(rows) * 4 < entry.rows:
                out[queries] = segment.memmap()[rows]
                return
            chunk_rows = max(1, _CHUNK_BYTES // segment.row_bytes)
            direct = segment.dtype == out.dtype
            i = 0
            while i < len(rows):
                first = int(rows[i])
                j = int(np.searchsorted(rows, first + chunk_rows, side="left"))
                stop = int(rows[j - 1]) + 1
                count = j - i
                q = queries[i:j]
                if direct and count == stop - first and (count == 1 or (np.diff(q) == 1).all()):
                    segment.read_rows_into(first, out[int(q[0]) : int(q[0]) + count])
                else:
                    buffer = np.empty((stop - first, entry.dim), dtype=segment.dtype)
                    segment.read_rows_into(first, buffer)
                    out[q] = buffer if count == stop - first else buffer[rows[i:j] - first]
                i = j

    def _current(self, fingerprint: str) -> tuple[_View, dict[str, str]]:
        view = self._view(fingerprint)
        return view, self._failures(fingerprint, view)

    def _failures(self, fingerprint: str, view: _View) -> dict[str, str]:
        """{key: latest reason}, read once per manifest version."""
        if view.failures is None:
            failures: dict[str, str] = {}
            for entry in view.segments:
                if entry.kind != _FAILURES or entry.name in view.bad:
                    continue
                path = self._segment_path(fingerprint, entry.name)
                with _Segment(path, entry) as segment:
                    keys, reasons = _failure_records(segment)
                failures.update(zip(keys, reasons, strict=True))
            view.failures = failures
        return view.failures

    def _view(self, fingerprint: str) -> _View:
        """The fingerprint as the manifest says now; rebuilt only when the manifest changed."""
        self._first_touch(fingerprint)
        segments = _entries(self._manifest(fingerprint))
        bad = frozenset(self._bad.get(fingerprint, ()))
        current = self._views.get(fingerprint)
        if current is not None and current.segments == segments and current.bad == bad:
            return current
        live = {e.name for e in segments}
        for memo in (self._words, self._trusted):
            for key in [k for k in memo if k[0] == fingerprint and k[1] not in live]:
                del memo[key]
        embedding = [e for e in segments if e.kind == _EMBEDDINGS and e.name not in bad]
        bases = np.zeros(len(embedding) + 1, dtype=np.int64)
        np.cumsum([e.rows for e in embedding], out=bases[1:])
        by_width: dict[int, tuple[list[npt.NDArray[np.uint64]], list[npt.NDArray[np.int64]]]] = {}
        for i, entry in enumerate(embedding):
            words_list, gid_list = by_width.setdefault(entry.key_width, ([], []))
            words_list.append(self._segment_words(fingerprint, entry))
            gid_list.append(np.arange(bases[i], bases[i + 1], dtype=np.int64))
        indexes = {
            width: _KeyIndex.build(np.concatenate(w), np.concatenate(g))
            for width, (w, g) in by_width.items()
        }
        view = _View(segments, bad, embedding, bases, indexes)
        self._views[fingerprint] = view
        return view

    def _segment_words(self, fingerprint: str, entry: _Entry) -> npt.NDArray[np.uint64]:
        cached = self._words.get((fingerprint, entry.name))
        if cached is None:
            with _Segment(self._segment_path(fingerprint, entry.name), entry) as segment:
                cached = _words_of(segment.read_keys())
            self._words[(fingerprint, entry.name)] = cached
        return cached

    def _check_data(self, fingerprint: str, segment: _Segment, *, always: bool = False) -> None:
        """Verify a segment's data checksum before its rows are served, unless its file is
        unchanged (inode, size, mtime, ctime) since a check that was not racy: a warm read of
        an unchanged segment costs one fstat, the first read after any change one full pass."""
        key = (fingerprint, segment.entry.name)
        stamp, stamped_at = segment.stamp(), time.time_ns()
        if not always:
            if self._trusted.get(key) == stamp:
                return
            recorded = self._stamps(fingerprint).get(key[1])
            if isinstance(recorded, list | tuple) and tuple(recorded) == stamp:
                self._trusted[key] = stamp
                return
        self._trusted.pop(key, None)
        segment.verify_data()
        if stamped_at - max(stamp[2], stamp[3]) < _RACY_NS:
            return  # changed moments before the stamp: a change in the same tick would not show
        self._remember_verified(fingerprint, key[1], stamp)
        self._trusted[key] = stamp

    def _stamps(self, fingerprint: str) -> dict[str, Any]:
        """{segment: stamp at its last check}, as any process recorded them (a hint only:
        anything unreadable counts as never checked)."""
        try:
            stamps = self._meta_get(_verified_key(fingerprint))
        except (sqlite3.OperationalError, diskcache.Timeout):
            raise
        except Exception:  # a value that does not unpickle: check the data
            return {}
        return stamps if isinstance(stamps, dict) else {}

    def _remember_verified(self, fingerprint: str, name: str, stamp: tuple[int, ...]) -> None:
        """Record a check so later processes skip it; best effort (a read-only or busy index
        only means the next read checks again)."""
        if self._read_only is not None:
            return
        try:
            with self._transaction():
                live = {t[0] for t in self._manifest(fingerprint)["segments"]}
                stamps = {n: v for n, v in self._stamps(fingerprint).items() if n in live}
                stamps[name] = list(stamp)
                self._meta.set(_verified_key(fingerprint), stamps)
        except (sqlite3.Error, diskcache.Timeout, OSError) as exc:
            log.debug("could not record the check of %s: %s", name, exc)

    def _retrying(self, fingerprint: str, action: Callable[[], T]) -> T:
        """Run a read; a segment found corrupt is set aside, one found gone (a concurrent
        compaction) makes the manifest be read again, and the read starts over."""
        vanished = 0
        while True:
            try:
                return action()
            except _SegmentCorruptError as exc:  # noqa: PERF203 (the retry loop is the point)
                self._mark_bad(fingerprint, exc.name, exc.reason)
            except _SegmentVanishedError as exc:
                vanished += 1
                names = {e.name for e in _entries(self._manifest(fingerprint))}
                if exc.name in names:
                    self._mark_bad(fingerprint, exc.name, "listed in the manifest but missing")
                elif vanished > _MAX_VANISHED:
                    raise RunError(
                        f"the embedding cache for {fingerprint} kept changing during a read",
                        hint="run the command again",
                    ) from None

    def _mark_bad(self, fingerprint: str, name: str, reason: str, *, quiet: bool = False) -> None:
        if not quiet:
            log.warning(
                "ignoring unusable embedding-cache segment %s: %s (its items will be embedded "
                "again; compaction sets the file aside)",
                self._segment_path(fingerprint, name),
                reason,
            )
        self._bad.setdefault(fingerprint, set()).add(name)

    # --- writing ---

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write: refused at once when the cache is read-only; an OSError (disk full,
        permissions) or a damaged cache.db becomes a one-line error."""
        self.check_writable()
        try:
            yield
        except OSError as exc:
            if exc.errno in _READ_ONLY_ERRNOS:
                raise self._read_only_error(exc.strerror or str(exc)) from exc
            raise RunError(
                f"cannot write to the embedding cache at {self._root}: {exc.strerror or exc}",
                hint="free disk space or point ALCLI_CACHE_DIR elsewhere",
            ) from exc
        except sqlite3.OperationalError as exc:
            if not _can_write(self._root / "meta"):
                raise self._read_only_error(str(exc)) from exc
            raise RunError(
                f"cannot write the embedding-cache index {self.index_path}: {exc}"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise RunError(
                f"the embedding-cache index {self.index_path} is damaged ({exc})",
                hint="run the command again: it is rebuilt from the segment files on opening",
            ) from exc

    def _check_dim(self, fingerprint: str, dim: int) -> None:
        existing = self._manifest_dim(self._manifest(fingerprint))
        if existing is not None and existing != dim:
            raise ValueError(
                f"embeddings have dim {dim} but fingerprint {fingerprint} holds dim {existing}; "
                "a fingerprint covers one model, so its dim cannot change"
            )

    @staticmethod
    def _manifest_dim(manifest: dict[str, Any] | None) -> int | None:
        for entry in _entries(manifest):
            if entry.kind == _EMBEDDINGS:
                return entry.dim
        return None

    def _append(self, fingerprint: str, entries: list[_Entry], dim: int | None) -> dict[str, Any]:
        """Commit written segments to the manifest, in one transaction (the commit point).
        Idempotent: a segment already listed (adopted, or committed before a Ctrl-C landed)
        is not listed twice."""
        with self._transaction():
            manifest = self._manifest(fingerprint)
            if dim is not None:
                self._check_dim(fingerprint, dim)
            listed = {t[0] for t in manifest["segments"]}
            new = [tuple(e) for e in entries if e.name not in listed]
            manifest["segments"] = [*manifest["segments"], *new]
            self._put_manifest(fingerprint, manifest)
        return manifest

    def _undo_or_keep(
        self, fingerprint: str, entries: list[_Entry], dim: int | None, error: BaseException
    ) -> None:
        """A store failed after writing ``entries``. An error (a dim clash, a full disk) undoes
        them. A Ctrl-C or exit between a rename and its commit keeps the batch, which is whole
        on disk: commit it now, or, if that is interrupted too, leave the files for the next
        open to adopt (_reconcile)."""
        if isinstance(error, Exception):
            self._delete_files(fingerprint, [e.name for e in entries])
        elif entries:
            with contextlib.suppress(Exception):
                self._append(fingerprint, entries, dim)

    def _delete_files(self, fingerprint: str, names: Iterable[str]) -> None:
        for name in names:
            self._segment_path(fingerprint, name).unlink(missing_ok=True)

    def _segment_dir(self, fingerprint: str) -> Path:
        return self._root / "segments" / fingerprint

    def _segment_path(self, fingerprint: str, name: str) -> Path:
        return self._root / "segments" / fingerprint / name

    def _fingerprints(self) -> list[str]:
        return sorted(
            k.removeprefix("manifest:")
            for k in self._meta.iterkeys()
            if isinstance(k, str) and k.startswith("manifest:")
        )

    # --- compaction ---

    def _maybe_auto_compact(self, fingerprint: str, segments: tuple[_Entry, ...]) -> None:
        small = sum(
            1
            for e in segments
            if e.kind == _EMBEDDINGS and e.nbytes - e.data_offset < self._small_segment_bytes
        )
        failures = sum(1 for e in segments if e.kind == _FAILURES)
        if max(small, failures) < self._auto_compact_segments:
            return
        self._compact_leased(fingerprint, small_only=True)

    def _compact_leased(self, fingerprint: str, *, small_only: bool) -> None:
        """Compact unless another live process holds this fingerprint's lease. Errors only
        warn: the data is committed, and a merge can wait for the next store or open."""
        lease = _lease_key(fingerprint)
        if not self._meta.add(lease, os.getpid(), expire=_LEASE_S, retry=True):
            with self._transaction():
                holder = self._meta.get(lease)
                if isinstance(holder, int) and _pid_alive(holder):
                    return  # another process (or thread) is compacting this fingerprint
                self._meta.set(lease, os.getpid(), expire=_LEASE_S)  # its holder was killed
        try:
            self._compact(fingerprint, small_only=small_only)
        except OSError as exc:
            log.warning("could not compact the embedding cache for %s: %s", fingerprint, exc)
        finally:
            self._meta.delete(lease, retry=True)

    def _compact(self, fingerprint: str, *, small_only: bool) -> None:
        for _ in range(4):  # a member went bad or a concurrent merge took it: start over
            view, failures = self._retrying(fingerprint, lambda: self._current(fingerprint))
            members = self._pick_members(view, small_only=small_only)
            if not members:
                break
            try:
                merged = self._merge(fingerprint, view, members, failures)
            except _SegmentCorruptError as exc:
                self._mark_bad(fingerprint, exc.name, exc.reason)
                continue
            except _SegmentVanishedError:
                continue
            if not self._swap(fingerprint, members, [e for e, _ in merged]):
                self._delete_files(fingerprint, [e.name for e, _ in merged])
                continue
            for entry, words in merged:
                if words is not None:
                    self._words[(fingerprint, entry.name)] = words
            bad = self._bad.get(fingerprint, set())
            for entry in members:
                path = self._segment_path(fingerprint, entry.name)
                if entry.name in bad:  # kept aside for inspection; clear() removes it
                    with contextlib.suppress(FileNotFoundError):
                        path.replace(path.with_name(path.name + ".corrupt"))
                else:
                    path.unlink(missing_ok=True)
            break
        self._reconcile(fingerprint)

    def _pick_members(self, view: _View, *, small_only: bool) -> list[_Entry]:
        """Segments to merge: every one, or the small ones once there are enough of them;
        failure records are always merged whole; known-bad segments always go."""
        bad = [e for e in view.segments if e.name in view.bad]
        embedding = view.embedding_segments
        failures = [e for e in view.segments if e.kind == _FAILURES and e.name not in view.bad]
        if small_only:
            small = [e for e in embedding if e.nbytes - e.data_offset < self._small_segment_bytes]
            embedding = small if len(small) >= self._auto_compact_segments else []
            if len(failures) < self._auto_compact_segments:
                failures = []
        else:
            stored = sum(e.rows for e in embedding)
            superseded = stored > sum(index.items for index in view.indexes.values())
            if len(embedding) < 2 and not superseded:
                embedding = []
            if len(failures) < 2:
                failures = []
        members = {e.name for e in [*bad, *embedding, *failures]}
        return [e for e in view.segments if e.name in members]

    def _merge(
        self,
        fingerprint: str,
        view: _View,
        members: list[_Entry],
        failures: dict[str, str],
    ) -> list[tuple[_Entry, npt.NDArray[np.uint64] | None]]:
        """Write the merged segments. Only rows that currently win go in, so a merged segment
        placed where its last member was never shadows a later store of the same key."""
        names = {e.name for e in members}
        merged: list[tuple[_Entry, npt.NDArray[np.uint64] | None]] = []
        try:
            is_member = np.array([e.name in names for e in view.embedding_segments], dtype=bool)
            for width, index in view.indexes.items():
                words, gids = index.entries()
                keep = is_member[view.segment_of(gids)] if len(gids) else np.zeros(0, bool)
                if not keep.any():
                    continue
                words, gids = words[keep], gids[keep]
                order = np.argsort(gids, kind="stable")
                words, gids = words[order], gids[order]
                raw = np.ascontiguousarray(words.view(np.uint8)[:, :width])
                sources = [
                    (view.embedding_segments[i], int(view.bases[i]))
                    for i in np.unique(view.segment_of(gids))
                ]
                dtype_code = min(e.dtype_code for e, _ in sources)
                dim = sources[0][0].dim
                entry = _write_segment(
                    self._segment_dir(fingerprint),
                    kind=_EMBEDDINGS,
                    raw_keys=raw,
                    rows=len(gids),
                    dim=dim,
                    dtype_code=dtype_code,
                    payload=self._winning_rows(fingerprint, sources, gids, _DTYPES[dtype_code]),
                    payload_bytes=len(gids) * dim * _DTYPES[dtype_code].itemsize,
                    durable=self._durable,
                )
                merged.append((entry, _words_of(raw)))
            if failures and any(e.kind == _FAILURES for e in members):
                entry = self._write_failures(fingerprint, list(failures), list(failures.values()))
                merged.append((entry, None))
        except BaseException:
            self._delete_files(fingerprint, [e.name for e, _ in merged])
            raise
        return merged

    def _write_failures(self, fingerprint: str, keys: list[str], reasons: list[str]) -> _Entry:
        """One failure-record segment (JSON keys and reasons), written atomically."""
        payload = json.dumps({"keys": keys, "reasons": reasons}).encode()
        return _write_segment(
            self._segment_dir(fingerprint),
            kind=_FAILURES,
            raw_keys=None,
            rows=len(keys),
            dim=0,
            dtype_code=0,
            payload=[payload],
            payload_bytes=len(payload),
            durable=self._durable,
        )

    def _winning_rows(
        self,
        fingerprint: str,
        sources: list[tuple[_Entry, int]],
        gids: npt.NDArray[np.int64],
        dtype: np.dtype[Any],
    ) -> Iterator[Array]:
        """The rows ``gids`` (ascending) in order, read whole per source so that each
        source's data checksum is verified."""
        for entry, base in sources:
            rows = gids[(gids >= base) & (gids < base + entry.rows)] - base
            with _Segment(self._segment_path(fingerprint, entry.name), entry) as segment:
                chunk_rows = max(1, _CHUNK_BYTES // segment.row_bytes)
                for start, chunk in segment.checked_chunks(chunk_rows):
                    a, b = np.searchsorted(rows, [start, start + len(chunk)])
                    if a < b:
                        yield chunk[rows[a:b] - start].astype(dtype, copy=False)

    def _swap(self, fingerprint: str, members: list[_Entry], merged: list[_Entry]) -> bool:
        """Replace members by merged segments in one transaction; False if someone else
        changed those members first. Each merged segment takes its last member's place."""
        names = {e.name for e in members}
        new_names = {e.name for e in merged}
        with self._transaction():
            manifest = self._manifest(fingerprint)
            current = [e for e in _entries(manifest) if e.name not in new_names]
            if not names <= {e.name for e in current}:
                return False
            last_at = {(e.kind, e.key_width): i for i, e in enumerate(current) if e.name in names}
            segments: list[tuple[Any, ...]] = []
            for i, entry in enumerate(current):
                if entry.name not in names:
                    segments.append(tuple(entry))
                    continue
                segments.extend(tuple(m) for m in merged if last_at.get((m.kind, m.key_width)) == i)
            manifest["segments"] = segments
            # The members' files are deleted next; retired, a crash cannot make them adopted.
            manifest["retired"] = sorted({*manifest["retired"], *names})
            self._put_manifest(fingerprint, manifest)
        return True

    # --- after a crash: temp files, unlisted segments, unfinished compactions ---

    def _first_touch(self, fingerprint: str) -> None:
        """Once per process and fingerprint: tidy what a crash left (``_reconcile``), and when a
        write was cut short, finish the compaction it may have been (the one ``embed`` ends
        with is never started again by a rerun that has nothing left to embed)."""
        if fingerprint in self._touched or self._read_only is not None:
            return
        self._touched.add(fingerprint)
        try:
            if self._reconcile(fingerprint):
                self._compact_leased(fingerprint, small_only=False)
        except OSError as exc:
            if exc.errno not in _READ_ONLY_ERRNOS:
                log.warning("could not tidy the embedding cache for %s: %s", fingerprint, exc)

    def _reconcile(self, fingerprint: str) -> bool:
        """Bring the segment folder and the manifest into agreement: delete temp files whose
        writer is gone (no lock held, pid dead) and files a compaction or clear retired, adopt
        whole segments that no manifest lists. Returns whether an abandoned temp was found."""
        directory = self._segment_dir(fingerprint)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return False
        manifest = self._manifest(fingerprint)
        listed = {t[0] for t in manifest["segments"]}
        interrupted = False
        for name in names:
            path = directory / name
            if name.startswith(_TEMP_PREFIX):
                interrupted |= _remove_if_abandoned(path)
            elif name in manifest["retired"] and name not in listed:
                path.unlink(missing_ok=True)
        self._adopt(fingerprint, everything=False)
        return interrupted

    def _adopt(self, fingerprint: str, *, everything: bool, reset: bool = False) -> dict[str, Any]:
        """List whole segments that the manifest lacks, oldest first, and return the manifest.

        A store killed or interrupted between its rename and its commit keeps its batch once
        its writer is gone; with ``everything`` (a lost or malformed index) every whole
        segment is listed, whoever wrote it, into an empty list when ``reset``. Files that
        are not whole segments are deleted once older than any live write. Retired names
        whose files are gone are forgotten."""
        directory = self._segment_dir(fingerprint)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            names = []
        manifest = _checked_manifest(None) if reset else self._manifest(fingerprint)
        skip = {t[0] for t in manifest["segments"]} | set(manifest["retired"])
        found: list[_Entry] = []
        for name in names:
            if name in skip or name.startswith(_TEMP_PREFIX) or name.endswith(".corrupt"):
                continue
            path = directory / name
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if not everything and not _writer_gone(name, mtime):
                continue
            try:
                if not _SEGMENT_NAME.fullmatch(name):
                    raise _SegmentCorruptError(name, "not a segment file name")
                found.append(_entry_from_file(path))
            except _SegmentCorruptError as exc:
                if everything:
                    log.warning("not adopting embedding-cache file %s: %s", path, exc.reason)
                if time.time() - mtime > _ORPHAN_GRACE_S:
                    path.unlink(missing_ok=True)
            except _SegmentVanishedError:
                continue
        forgotten = set(manifest["retired"]) - set(names)
        if not (found or forgotten or reset):
            return manifest
        with self._transaction():
            if not reset:
                manifest = self._manifest(fingerprint)
            taken = {t[0] for t in manifest["segments"]} | set(manifest["retired"])
            dim = self._manifest_dim(manifest)
            adopted = []
            for entry in found:
                if entry.name in taken:  # listed or retired meanwhile
                    continue
                if entry.kind == _EMBEDDINGS and dim not in (None, entry.dim):
                    log.warning(
                        "not adopting embedding-cache segment %s: dim %d, the others have %d",
                        directory / entry.name,
                        entry.dim,
                        dim,
                    )
                    continue
                if entry.kind == _EMBEDDINGS:
                    dim = entry.dim
                adopted.append(tuple(entry))
            manifest["segments"] = [*manifest["segments"], *adopted]
            manifest["retired"] = [n for n in manifest["retired"] if n not in forgotten]
            self._put_manifest(fingerprint, manifest)
        if adopted:
            log.info(
                "kept %d segment(s) of %s that an interrupted run had written but not listed",
                len(adopted),
                fingerprint,
            )
        return manifest
