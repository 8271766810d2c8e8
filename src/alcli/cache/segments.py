"""The segment file: one batch of rows with their keys, whole or absent, checked on read.

A segment is a 64-byte header (magic, version, kind, key width, rows, dim, dtype, payload
bytes, keys crc32, data crc32, then the header's own crc32), the raw keys, zero padding to a
multiple of 64, and the rows (or, for failure records, JSON keys and reasons). It is written
to a temp file (held under ``flock`` until closed), fsynced (≈ 9 ms per 2 MiB here) and
renamed, so a segment is whole or absent. Raw segment files read with one ``readinto``
cost ≈ 1 s per 1M rows, against ≈ 6 s for one diskcache entry per 1,024-row block (see
DESIGN.md). The format is unchanged since alcli 0.1.0 (tests/test_cache_faults.py writes a
first-format cache without this code).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import struct
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

EMBEDDINGS = 0
FAILURES = 1
DTYPES: dict[int, np.dtype[Any]] = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
DTYPE_CODES = {"float32": 0, "float16": 1}
# <time_ns>-<writer pid>-<random>.seg, as write_segment names them; temp files get a prefix
SEGMENT_NAME = re.compile(r"[0-9a-f]{16,}-([0-9a-f]{1,16})-[0-9a-f]{12}\.seg")
TEMP_PREFIX = ".tmp-"
_MAGIC = b"ALCLISEG"
_VERSION = 1
# magic, version, kind, key_width, rows, dim, dtype, payload_bytes, keys_crc, data_crc
_HEAD = struct.Struct("<8sHHIQIIQII")
_HEAD_CRC = struct.Struct("<I")
_HEADER_SIZE = 64
_ALIGN = 64
_CHUNK_BYTES = 64 << 20  # rows read per call when a segment is read densely
_VERIFY_CHUNK = 8 << 20  # bytes checksummed per read when a segment's data is verified


class Entry(NamedTuple):
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


class SegmentCorruptError(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class SegmentVanishedError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _data_offset(rows: int, key_width: int) -> int:
    end = _HEADER_SIZE + rows * key_width
    return -(-end // _ALIGN) * _ALIGN


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


def _byte_view(data: Array | bytes) -> memoryview:
    """The bytes of ``data`` without a copy (arrays must be C-contiguous)."""
    if isinstance(data, bytes):
        return memoryview(data)
    if not data.flags.c_contiguous:
        data = np.ascontiguousarray(data)
    return data.data.cast("B")


def write_segment(
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
) -> Entry:
    """Write a whole segment under a temp name, then rename: readers never see half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():016x}-{os.getpid():x}-{uuid.uuid4().hex[:12]}.seg"
    temp = directory / f"{TEMP_PREFIX}{name}"
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
    return Entry(name, kind, rows, key_width, dim, dtype_code, data_offset + payload_bytes)


def write_failures(directory: Path, keys: list[str], reasons: list[str], *, durable: bool) -> Entry:
    """One failure-record segment (JSON keys and reasons), written atomically."""
    payload = json.dumps({"keys": keys, "reasons": reasons}).encode()
    return write_segment(
        directory,
        kind=FAILURES,
        raw_keys=None,
        rows=len(keys),
        dim=0,
        dtype_code=0,
        payload=[payload],
        payload_bytes=len(payload),
        durable=durable,
    )


class Segment:
    """An open segment file whose header and size match what the manifest says."""

    def __init__(self, path: Path, entry: Entry) -> None:
        self.entry = entry
        try:
            self.file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise SegmentVanishedError(entry.name) from None
        except OSError as exc:
            raise SegmentCorruptError(entry.name, f"cannot be opened ({exc.strerror})") from None
        try:
            self._check_header()
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def _corrupt(self, reason: str) -> SegmentCorruptError:
        return SegmentCorruptError(self.entry.name, reason)

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
        return DTYPES[self.entry.dtype_code]

    @property
    def row_bytes(self) -> int:
        return self.entry.dim * self.dtype.itemsize

    @property
    def chunk_rows(self) -> int:
        """Rows per read when the segment is read densely (64 MiB at a time)."""
        return max(1, _CHUNK_BYTES // self.row_bytes)

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

    def advise(self, start_row: int, rows: int) -> None:
        """Tell the kernel these rows are read next (``POSIX_FADV_WILLNEED``): it reads them
        into the page cache in the background while the caller computes on the rows before."""
        advise = getattr(os, "posix_fadvise", None)
        if advise is None or rows <= 0:
            return
        with contextlib.suppress(OSError):
            offset = self.entry.data_offset + start_row * self.row_bytes
            advise(self.file.fileno(), offset, rows * self.row_bytes, os.POSIX_FADV_WILLNEED)

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


def entry_from_file(path: Path) -> Entry:
    """The manifest entry that a whole segment file stands for, read from its header and size,
    keys checked: how a segment the manifest lacks is adopted, and a lost index rebuilt. The
    data checksum is checked on the segment's first read, as for any segment not stamped."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise SegmentVanishedError(path.name) from None
    except OSError as exc:
        raise SegmentCorruptError(path.name, f"cannot be opened ({exc.strerror})") from None
    fields = _unpack_header(head)
    if fields is None:
        raise SegmentCorruptError(path.name, "bad header (not a segment, or overwritten)")
    version, kind, key_width, rows, dim, dtype_code = fields[:6]
    usable = kind == FAILURES or (kind == EMBEDDINGS and key_width > 0 and dim > 0)
    if version != _VERSION or not usable or dtype_code not in DTYPES:
        raise SegmentCorruptError(path.name, "not a segment this version of alcli can read")
    entry = Entry(path.name, kind, rows, key_width, dim, dtype_code, size)
    with Segment(path, entry) as segment:  # checks the size against the header
        if kind == EMBEDDINGS:
            segment.read_keys()
    return entry


def failure_records(segment: Segment) -> tuple[list[str], list[str]]:
    """(keys, reasons) of a failure-record segment, checksum verified."""
    try:
        record = json.loads(segment.read_payload())
        keys, reasons = record["keys"], record["reasons"]
        if len(keys) != segment.entry.rows or len(reasons) != segment.entry.rows:
            raise ValueError("row count")
    except (ValueError, KeyError, TypeError):
        raise SegmentCorruptError(segment.entry.name, "failure records do not parse") from None
    return keys, reasons
