"""Cache keys from cheap metadata, never from reading the images (unless content hashing).

Local files key on real path + size + mtime_ns; remote objects on URI + ETag (quotes
stripped), else URI + size + modification time, from whatever listing or ``info`` call found
them. An entry with no key gets an ``Unreadable`` (why), which becomes an item whose key
starts with ``UNREADABLE_KEY_PREFIX``: never a cache key.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, TypeVar

from alcli.errors import one_line

UNREADABLE_KEY_PREFIX = "unreadable-"
"""Keys of items that could not be stat'ed or read while resolving; never a content key."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CHUNK = 64  # items per thread-pool task: amortises executor overhead on millions of items
_T = TypeVar("_T")
_R = TypeVar("_R")


class Unreadable(NamedTuple):
    """Why an entry got no key: ``missing`` when it is simply not there."""

    missing: bool
    reason: str


def text_bytes(text: str) -> bytes:
    """UTF-8, with a non-UTF-8 file name's surrogate escapes turned back into its own bytes.

    Same bytes as ``str.encode()`` for every valid string, so no existing key changes.
    """
    return text.encode("utf-8", "surrogateescape")


def _digest(scheme: str, *fields: object) -> str:
    """blake2b-128 of tagged fields; the tag keeps the key schemes from ever colliding."""
    digest = hashlib.blake2b(scheme.encode(), digest_size=16)
    for value in fields:
        digest.update(b"\0")
        digest.update(text_bytes(str(value)))
    return digest.hexdigest()


def local_key(realpath: str, size: int, mtime_ns: int) -> str:
    return _digest("local", realpath, size, mtime_ns)


def unreadable_key(uri: str) -> str:
    return UNREADABLE_KEY_PREFIX + _digest("unreadable", uri)


def content_key(data: bytes) -> str:
    digest = hashlib.blake2b(b"content\0", digest_size=16)
    digest.update(data)
    return digest.hexdigest()


def remote_key(uri: str, etag: str | None, size: int | None, mtime_ns: int | None) -> str:
    """URI + ETag when the store gives one, else URI + size + modification time.

    ``etag_manifests.py`` builds the ETag form in bulk, byte for byte the same.
    """
    if etag:
        return _digest("etag", uri, etag)
    return _digest("stat", uri, size, mtime_ns)


def os_reason(error: OSError | ValueError) -> str:
    """A local file's problem as an item's reason, in the words ``Pool.read`` uses."""
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, IsADirectoryError):
        return "unreadable: is a directory"
    if isinstance(error, PermissionError):
        return "unreadable: permission denied"
    detail = error.strerror if isinstance(error, OSError) else None
    return f"unreadable: {detail or one_line(error)}"


def local_problem(path: str, error: OSError | ValueError) -> Unreadable:
    """``os_reason`` for a path that failed to stat; a dangling symlink says so."""
    reason = os_reason(error)
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        reason = "not found (dangling symlink)"
    return Unreadable(isinstance(error, FileNotFoundError), reason)


# --- remote metadata ----------------------------------------------------------------------


def normalize_etag(value: object) -> str | None:
    """ETags come quoted from S3 listings and unquoted from inventories: compare them bare."""
    if value is None:
        return None
    text = str(value).strip()
    text = text.removeprefix("W/").strip('"').strip()
    return text or None


def to_ns(value: object) -> int | None:
    """A modification time (datetime, ISO-8601 text or epoch seconds) as epoch nanoseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value) * 1e9)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            try:
                return round(float(text) * 1e9)
            except ValueError:
                return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
    return None


def to_size(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def key_from_info(uri: str, info: Mapping[str, Any]) -> str:
    """Key from what a listing / ``info`` call returned; field names differ between stores."""
    etag = normalize_etag(info.get("ETag") or info.get("etag") or info.get("e_tag"))
    size = to_size(info.get("size", info.get("Size")))
    mtime = None
    for name in ("LastModified", "last_modified", "mtime", "updated", "modified", "created"):
        mtime = to_ns(info.get(name))
        if mtime is not None:
            break
    return remote_key(uri, etag, size, mtime)


def remote_item_key(fs: Any, uri: str) -> str | Unreadable:
    """One ``info`` request for an object a manifest names without its metadata."""
    try:
        info = fs.info(fs._strip_protocol(uri))
    except FileNotFoundError:
        return Unreadable(True, "not found")
    except Exception as error:  # recorded on the item; the pool goes on
        return Unreadable(False, f"unreadable: {type(error).__name__}: {one_line(error)}")
    if info.get("type") == "directory":
        return Unreadable(True, "unreadable: is a directory")
    return key_from_info(uri, info)


# --- local metadata -----------------------------------------------------------------------


class LocalKeys:
    """Keys of local files: one ``lstat`` each, real paths from cached real folder paths.

    ``os.path.realpath`` costs an ``lstat`` per path component; only symlinks need it.
    One instance per resolve, so a folder re-linked later is not served from a stale cache.
    """

    def __init__(self) -> None:
        self._real_folders: dict[str, str] = {}

    def key(self, path: str) -> str | Unreadable | None:
        """The key, why there is none (missing, a symlink loop...), None when not a file."""
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                real = os.path.realpath(path)
                info = os.stat(path)
            else:
                folder, name = os.path.split(path)
                real = os.path.join(self._real_folder(folder), name)
        except (OSError, ValueError) as error:  # ValueError: a NUL in a manifest's path
            return local_problem(path, error)
        if not stat.S_ISREG(info.st_mode):
            return None
        return local_key(real, info.st_size, info.st_mtime_ns)

    def manifest_key(self, path: str) -> str | Unreadable:
        """A manifest names items on purpose: a folder there is an unreadable item."""
        return self.key(path) or Unreadable(False, "unreadable: not a file")

    def _real_folder(self, folder: str) -> str:
        real = self._real_folders.get(folder)
        if real is None:
            real = self._real_folders[folder] = os.path.realpath(folder)
        return real


def map_chunked(
    function: Callable[[_T], _R], values: Sequence[_T], threads: int, *, min_parallel: int = 2
) -> list[_R]:
    """``map`` on a bounded thread pool, in order: how keys are looked up (or hashed) in bulk.

    Values go in chunks (at most ``_CHUNK``) so millions of cheap calls do not pay one task
    each, yet every thread gets work: a slow store wants one request per thread at a time.
    """
    if len(values) < max(2, min_parallel) or threads == 1:
        return [function(value) for value in values]
    size = max(1, min(_CHUNK, len(values) // (threads * 4)))
    chunks = [values[start : start + size] for start in range(0, len(values), size)]
    with ThreadPoolExecutor(max_workers=min(threads, len(chunks))) as executor:
        done = executor.map(lambda chunk: [function(value) for value in chunk], chunks)
        return [result for chunk_results in done for result in chunk_results]
