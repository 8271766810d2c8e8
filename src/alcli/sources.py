"""POOL spec -> ordered items, each with a cache key from cheap metadata.

A POOL is one of:

- a directory (local or a remote prefix such as ``s3://bucket/imgs/``): every image below it,
  recursively, by extension (case-insensitive, see ``IMAGE_EXTENSIONS``). Names starting with
  ``.`` (hidden files and folders, macOS ``._x.jpg`` shadows) are skipped. Sorted by URI.
- a glob (``data/**/*.png``, ``s3://bucket/imgs/**/*.jpg``): every file it matches, whatever
  its extension (the pattern already says what is wanted). Sorted by URI.
- a single file with an image extension, local or any fsspec URI.
- a manifest, ``.txt`` (one URI per line; blank lines and lines starting with ``#`` ignored)
  or ``.csv`` / ``.jsonl`` with a ``uri`` column. Relative entries resolve against the
  manifest's own folder (a remote manifest's relative entries stay on its store). A ``.csv``
  or ``.jsonl`` manifest may carry ``etag``, ``size`` and ``last_modified`` for remote items,
  as an S3 Inventory report does; such items are keyed without any request (local entries
  are always stat'ed: that is cheap and matches a folder listing). A remote spec ending in
  one of ``MANIFEST_EXTENSIONS`` is read as a manifest; end it with ``/`` to list a prefix
  of that name. File order.
- ``-``: URIs on stdin, one per line, like a ``.txt`` manifest; relative paths resolve against
  the current directory.

Bad manifest lines (no uri, unknown protocol, not JSON) are skipped and listed in
``Pool.skipped`` with their line number; a manifest with no valid line is a ``PoolError``.
A URI given more than once is kept at its first position and listed in ``Pool.duplicates``.
An item named in a manifest (or a dangling symlink, a symlink loop, any entry of a folder
that cannot be stat'ed) stays in the pool with a key starting with ``UNREADABLE_KEY_PREFIX``
and its reason in ``Pool.unreadable``, so ``embed`` reports it as a skipped item instead of
losing it; such a key is never a cache key. A sub-folder that cannot be listed is noted in
``Pool.skipped`` and the walk goes on; only an unusable POOL as a whole is a ``PoolError``.

File names are kept as the OS gives them: a name that is not UTF-8 is a str with surrogate
escapes (PEP 383, ``os.fsdecode``), manifests are decoded the same way, and keys hash such
names as their original bytes (``_text_bytes``), so they work end to end.

Keys never come from reading the images (unless ``content_hash=True``), so a warm run does not
download the pool again: local files key on real path + size + mtime_ns; remote objects on
URI + ETag (quotes stripped), else URI + size + modification time, taken from the listing
that found them. The same object gets the same key from a listing, a glob or a manifest that
carries its ETag.

A million-line inventory still costs seconds of Python to parse and key, so with ``memo_dir``
the items an inventory-shaped ``.csv`` gives are remembered under the digest of its bytes: the
next resolution of the same file (a warm ``select`` every round) reads them back without
decoding or parsing it. Keys there are a pure function of the bytes, so the memo cannot go stale;
local items are never memoised (their keys come from ``stat``).

S3 settings (endpoint, profile, credentials) come from the usual AWS environment and config
files through botocore, which already honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``
and ``AWS_PROFILE``; ``storage_options`` are passed as they are to every non-local
filesystem the pool uses (``s3_options`` builds the common ones). ``Pool.read`` costs one
GET per remote item (s3fs would otherwise HEAD first) and a plain ``open().read()`` locally.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache, partial
from typing import Any, NamedTuple, TypeVar

import fsspec
from fsspec.core import split_protocol
from fsspec.exceptions import FSTimeoutError
from fsspec.registry import get_filesystem_class

from alcli.errors import ItemError, PoolError, StoreUnreachableError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "UNREADABLE_KEY_PREFIX",
    "Item",
    "Pool",
    "is_local",
    "normalize_uri",
    "resolve_pool",
    "s3_options",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl")
UNREADABLE_KEY_PREFIX = "unreadable-"
"""Keys of items that could not be stat'ed or read while resolving; never a content key."""

_LOCAL_PROTOCOLS = frozenset({"file", "local"})
_GLOB_MAGIC = re.compile(r"[*?[]")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CHUNK = 64  # items per thread-pool task: amortises executor overhead on millions of items
_T = TypeVar("_T")
_R = TypeVar("_R")


class Item(NamedTuple):
    """One pool item: where it is and the key its embedding is cached under.

    A named tuple rather than a frozen dataclass: a pool of a million items builds a million
    of these, and a tuple is built about twice as fast.
    """

    uri: str
    key: str

    @property
    def unreadable(self) -> bool:
        """True when resolving already found the item missing or unreadable."""
        return self.key.startswith(UNREADABLE_KEY_PREFIX)


@dataclass
class Pool:
    """The resolved POOL: items in a fixed order, plus what was dropped and why."""

    spec: str
    items: list[Item]
    duplicates: list[str] = field(default_factory=list)
    storage_options: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """Manifest lines and folders that were ignored, as ``"manifest.csv:7: no uri"``."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """URI -> why resolving could not use it ("not found", ...), for unreadable items."""
    _filesystems: _FileSystems = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._filesystems = _FileSystems(self.storage_options)

    @property
    def uris(self) -> list[str]:
        return [item.uri for item in self.items]

    def read(self, uri: str, timeout: float | None = None) -> bytes:
        """The item's bytes; safe to call from many threads (one filesystem per protocol).

        Raises ``ItemError`` ("not found", "empty file", "unreadable: ...") for a bad item, and
        its kind ``StoreUnreachableError`` when the store did not answer ("connection failed: ...",
        or "timed out after T s": a remote read with all its retries takes at most ``timeout``
        seconds, then it is cancelled). Local reads cannot be cancelled; the pipeline's own
        deadline covers them.
        """
        protocol, path = _split(uri)
        if protocol is None:
            data = _read_local(path)
        else:
            data = _read_remote(self._filesystems.get(protocol), protocol, path, timeout)
        if not data:
            raise ItemError("empty file")
        return data


def resolve_pool(
    spec: str,
    *,
    content_hash: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    stdin: Iterable[str] | None = None,
    io_threads: int = 32,
    memo_dir: str | os.PathLike[str] | None = None,
) -> Pool:
    """Resolve a POOL spec into ordered, keyed items (see the module docstring for the forms).

    ``stdin`` replaces ``sys.stdin`` for the ``-`` spec. ``io_threads`` bounds the threads
    used for remote metadata look-ups and for ``content_hash`` reads. ``memo_dir`` (a folder,
    created on demand) remembers large inventory manifests' items, see the module docstring.
    Raises ``PoolError`` when the spec as a whole cannot give any item.
    """
    spec = spec.strip()
    if not spec:
        raise PoolError("POOL is empty", hint="give a directory, a glob, a URI or a manifest")
    pool = Pool(spec=spec, items=[], storage_options=dict(storage_options or {}))
    resolver = _Resolver(pool, max(1, io_threads), None if memo_dir is None else str(memo_dir))
    if spec == "-":
        listed = resolver.from_stdin(sys.stdin if stdin is None else stdin)
    else:
        listed = resolver.from_spec(spec)
    pool.items = _drop_duplicates(listed, pool.duplicates)
    if content_hash:
        pool.items = _content_keyed(pool, pool.items, max(1, io_threads))
    return pool


def normalize_uri(uri: str, base: str | None = None) -> str:
    """The canonical form of a URI, as pool items carry it, so labels files match the pool.

    Local paths become absolute (``~`` expanded, symlinks kept); relative ones resolve against
    ``base`` (a local folder or a remote folder URI; default: the current directory).
    Remote URIs become ``protocol://path`` with the filesystem's main protocol name
    (``s3a://b/k`` -> ``s3://b/k``). Raises ``PoolError`` for an unknown protocol.
    """
    try:
        return _canonical(uri.strip(), base)
    except _BadEntryError as error:
        raise PoolError(f"cannot use URI {uri!r}: {error}") from None


def s3_options(
    *, endpoint_url: str | None = None, profile: str | None = None, anon: bool = False
) -> dict[str, Any]:
    """``storage_options`` for s3fs from CLI-level settings; empty means botocore's defaults."""
    options: dict[str, Any] = {}
    if endpoint_url:
        options["client_kwargs"] = {"endpoint_url": endpoint_url}
    if profile:
        options["profile"] = profile
    if anon:
        options["anon"] = True
    return options


# --- filesystems and reading -------------------------------------------------------------


class _FileSystems:
    """One fsspec filesystem per protocol, created on first use and shared by all threads."""

    def __init__(self, storage_options: Mapping[str, Any]) -> None:
        self._options = dict(storage_options)
        self._by_protocol: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the options: filesystems and locks are rebuilt where unpickled."""
        return {"options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._options = state["options"]
        self._by_protocol = {}
        self._lock = threading.Lock()

    def get(self, protocol: str) -> Any:
        found = self._by_protocol.get(protocol)
        if found is not None:
            return found
        with self._lock:
            if protocol not in self._by_protocol:
                try:
                    self._by_protocol[protocol] = fsspec.filesystem(protocol, **self._options)
                except (ImportError, ValueError, TypeError) as error:
                    raise PoolError(
                        f"cannot open {protocol}:// storage: {_one_line(error)}",
                        hint="check the protocol's package and the storage options",
                    ) from None
            return self._by_protocol[protocol]


def _read_local(path: str) -> bytes:
    """Plain unbuffered ``open().read()``: the fastest way to read a small local file."""
    try:
        with open(path, "rb", buffering=0) as handle:
            return handle.readall()
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise ItemError(_os_reason(error)) from None


def _read_remote(fs: Any, protocol: str, path: str, timeout: float | None = None) -> bytes:
    # s3fs issues a HEAD before every GET unless max_concurrency is 1: one request per item.
    extra: dict[str, Any] = {"max_concurrency": 1} if protocol in ("s3", "s3a") else {}
    if timeout and getattr(fs, "async_impl", False):
        # fsspec runs the call (retries included) under asyncio.wait_for: on the deadline the
        # request is cancelled and its connection freed, where a hung GET used to be retried
        # for ever while holding one of the few pooled connections.
        extra["timeout"] = timeout
    try:
        data = fs.cat_file(path, **extra)
    except FSTimeoutError:
        gone = (
            StoreUnreachableError.timed_out(timeout)
            if timeout
            else StoreUnreachableError("timed out")
        )
        raise gone from None
    except FileNotFoundError:
        raise ItemError("not found") from None
    except IsADirectoryError:
        raise ItemError("unreadable: is a directory") from None
    except PermissionError:
        raise ItemError("unreadable: access denied") from None
    except Exception as error:  # any other store failure is this item's failure
        detail = f"{type(error).__name__}: {_one_line(error)}"
        if _lost_connection(error):  # ... unless the store itself is gone: the run's
            raise StoreUnreachableError(f"connection failed: {detail}") from None
        raise ItemError(f"unreadable: {detail}") from None
    return bytes(data)


#: Exceptions (by class name, so that no client library is imported to check) that mean the
#: store could not be reached at all, whatever the item: botocore's, aiohttp's, the OS's.
_CONNECTION_ERRORS = frozenset(
    {
        "ConnectionError",  # the OS's (refused, reset, broken pipe) and botocore's (refused,
        # unreachable, DNS: EndpointConnectionError; ConnectTimeoutError)
        "ConnectionClosedError",  # botocore: the connection dropped mid-request
        "ReadTimeoutError",  # botocore: no answer within its read timeout, retries spent
        "ClientConnectionError",  # aiohttp: connector errors, server disconnected
        "TimeoutError",  # socket and asyncio timeouts
        "gaierror",  # DNS
    }
)


def _lost_connection(error: BaseException) -> bool:
    """True when ``error`` (or what it wraps) is a connection failure, not an answer."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(cls.__name__ in _CONNECTION_ERRORS for cls in type(current).__mro__):
            return True
        current = current.__cause__ or current.__context__
    return False


# --- keys ---------------------------------------------------------------------------------


def _text_bytes(text: str) -> bytes:
    """UTF-8, with a non-UTF-8 file name's surrogate escapes turned back into its own bytes.

    Same bytes as ``str.encode()`` for every valid string, so no existing key changes.
    """
    return text.encode("utf-8", "surrogateescape")


def _digest(scheme: str, *fields: object) -> str:
    """blake2b-128 of tagged fields; the tag keeps the key schemes from ever colliding."""
    digest = hashlib.blake2b(scheme.encode(), digest_size=16)
    for value in fields:
        digest.update(b"\0")
        digest.update(_text_bytes(str(value)))
    return digest.hexdigest()


def _local_key(realpath: str, size: int, mtime_ns: int) -> str:
    return _digest("local", realpath, size, mtime_ns)


def _unreadable_key(uri: str) -> str:
    return UNREADABLE_KEY_PREFIX + _digest("unreadable", uri)


class _Unreadable(NamedTuple):
    """Why an entry got no key: ``missing`` when it is simply not there."""

    missing: bool
    reason: str


def _item(uri: str, key: str | _Unreadable, unreadable: dict[str, str]) -> Item:
    """The item for ``uri``; an unreadable one gets an unreadable key, its reason noted."""
    if isinstance(key, _Unreadable):
        unreadable[uri] = key.reason
        return Item(uri, _unreadable_key(uri))
    return Item(uri, key)


def _os_reason(error: OSError | ValueError) -> str:
    """A local file's problem as an item's reason, in the words ``Pool.read`` uses."""
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, IsADirectoryError):
        return "unreadable: is a directory"
    if isinstance(error, PermissionError):
        return "unreadable: permission denied"
    detail = error.strerror if isinstance(error, OSError) else None
    return f"unreadable: {detail or _one_line(error)}"


def _local_problem(path: str, error: OSError | ValueError) -> _Unreadable:
    """``_os_reason`` for a path that failed to stat; a dangling symlink says so."""
    reason = _os_reason(error)
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        reason = "not found (dangling symlink)"
    return _Unreadable(isinstance(error, FileNotFoundError), reason)


def _content_key(data: bytes) -> str:
    digest = hashlib.blake2b(b"content\0", digest_size=16)
    digest.update(data)
    return digest.hexdigest()


def _remote_key(uri: str, etag: str | None, size: int | None, mtime_ns: int | None) -> str:
    """URI + ETag when the store gives one, else URI + size + modification time."""
    if etag:
        return _digest("etag", uri, etag)
    return _digest("stat", uri, size, mtime_ns)


def _normalize_etag(value: object) -> str | None:
    """ETags come quoted from S3 listings and unquoted from inventories: compare them bare."""
    if value is None:
        return None
    text = str(value).strip()
    text = text.removeprefix("W/").strip('"').strip()
    return text or None


def _to_ns(value: object) -> int | None:
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


def _to_size(value: object) -> int | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _key_from_info(uri: str, info: Mapping[str, Any]) -> str:
    """Key from what a listing / ``info`` call returned; field names differ between stores."""
    etag = _normalize_etag(info.get("ETag") or info.get("etag") or info.get("e_tag"))
    size = _to_size(info.get("size", info.get("Size")))
    mtime = None
    for name in ("LastModified", "last_modified", "mtime", "updated", "modified", "created"):
        mtime = _to_ns(info.get(name))
        if mtime is not None:
            break
    return _remote_key(uri, etag, size, mtime)


# --- URIs ---------------------------------------------------------------------------------


class _BadEntryError(Exception):
    """A manifest entry (or a URI given to ``normalize_uri``) that cannot name an item."""


@lru_cache(maxsize=64)
def _protocol_names(protocol: str) -> tuple[str, ...]:
    """The protocol names of the filesystem serving ``protocol``, its main name first."""
    try:
        cls = get_filesystem_class(protocol)
    except ValueError:
        raise _BadEntryError(f"unknown protocol '{protocol}://'") from None
    except ImportError as error:
        raise _BadEntryError(f"{protocol}:// needs a package: {_one_line(error)}") from None
    names = cls.protocol
    return (names,) if isinstance(names, str) else tuple(names)


def is_local(uri: str) -> bool:
    """True for a local path (or ``file://`` URI): read with ``open``, not over a network."""
    return _split(uri)[0] is None


def _split(uri: str) -> tuple[str | None, str]:
    """(protocol or None for local, path as the filesystem names it)."""
    protocol, path = split_protocol(uri)
    if protocol is None or protocol in _LOCAL_PROTOCOLS:
        return None, path
    return protocol, path


def _canonical_remote(protocol: str, path: str) -> str:
    names = _protocol_names(protocol)
    cls = get_filesystem_class(protocol)
    stripped = cls._strip_protocol(f"{protocol}://{path}")
    if any(stripped.startswith(f"{name}://") for name in names):
        return str(stripped)  # filesystems such as http keep the protocol in their paths
    return f"{names[0]}://{stripped}"


def _is_plain_s3(uri: str) -> bool:
    """Already canonical S3 URI (``s3://bucket/key``): the bulk of an inventory manifest.

    Checked with string tests only, because fsspec's generic path parsing costs tens of
    microseconds a URI, which is most of resolving a million-line manifest.
    """
    return (
        uri.startswith("s3://")
        and not uri.endswith("/")
        and "//" not in uri[5:]
        and not any(c in uri for c in "?#\\")
    )


def _canonical(uri: str, base: str | None) -> str:
    """Canonical URI; relative paths join ``base`` (a local folder or a remote folder URI)."""
    if not uri:
        raise _BadEntryError("empty URI")
    if _is_plain_s3(uri):
        return uri
    protocol, path = _split(uri)
    if protocol is not None:
        return _canonical_remote(protocol, path)
    path = os.path.expanduser(path)
    if os.path.isabs(path) or base is None:
        return os.path.abspath(path)
    base_protocol, base_path = _split(base)
    if base_protocol is None:
        return os.path.abspath(os.path.join(base_path, path))
    return _canonical_remote(base_protocol, posixpath.normpath(posixpath.join(base_path, path)))


def _parent(uri: str) -> str:
    protocol, path = _split(uri)
    if protocol is None:
        return os.path.dirname(os.path.abspath(path))
    return f"{protocol}://{posixpath.dirname(path.rstrip('/'))}"


def _has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _has_hidden_part(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/") if part)


def _looked_for() -> str:
    return ", ".join(IMAGE_EXTENSIONS)


# --- resolving ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """A manifest line, canonicalised, with whatever metadata the manifest carried."""

    uri: str
    etag: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    problem: str | None = None  # the line names an item but is malformed: unreadable, why


class _Resolver:
    """Turns one spec into items; holds the pool (for its filesystems and skipped list)."""

    def __init__(self, pool: Pool, threads: int, memo_dir: str | None = None) -> None:
        self.pool = pool
        self.threads = threads
        self.memo_dir = memo_dir

    # dispatch

    def from_spec(self, spec: str) -> list[Item]:
        protocol, path = _split(spec)
        if protocol is None:
            return self._local(spec, os.path.expanduser(path))
        try:
            _protocol_names(protocol)
        except _BadEntryError as error:
            raise PoolError(
                f"cannot resolve POOL {spec}: {error}",
                hint="use a local path or a known fsspec protocol such as s3:// or memory://",
            ) from None
        return self._remote(spec, protocol)

    def from_stdin(self, stream: Iterable[str]) -> list[Item]:
        isatty = getattr(stream, "isatty", None)
        if callable(isatty) and isatty():
            raise PoolError(
                "POOL is '-' but stdin is a terminal", hint="pipe URIs in, one per line"
            )
        records = _parse_lines(stream, "<stdin>")
        entries = self._entries(records, base=os.getcwd())
        if not entries:
            raise PoolError(
                "no URIs on stdin",
                hint="pipe one URI per line, e.g. find data -name '*.png' | alcli embed -",
            )
        return self._keyed(entries)

    # local

    def _local(self, spec: str, path: str) -> list[Item]:
        abspath = os.path.abspath(path)
        if os.path.isdir(abspath):
            items = _walk_local(abspath, self.pool)
            if not items:
                raise PoolError(
                    f"no images found under {spec} (looked for {_looked_for()})",
                    hint="point POOL at the folder that holds the images, or use a glob",
                )
            return items
        if os.path.isfile(abspath):
            return self._single_file(spec, abspath)
        if _GLOB_MAGIC.search(path):
            return _glob_local(spec, abspath, self.pool)
        raise PoolError(
            f"no such file or directory: {spec}", hint="check the path, or quote a glob"
        )

    def _single_file(self, spec: str, uri: str) -> list[Item]:
        name = uri.lower()
        if name.endswith(MANIFEST_EXTENSIONS):
            return self._manifest(uri)
        if _has_image_extension(name):
            return self._keyed([_Entry(uri)])
        raise PoolError(
            f"{spec} is neither an image ({_looked_for()}) "
            f"nor a manifest ({', '.join(MANIFEST_EXTENSIONS)})",
            hint="rename it, or list it in a .txt manifest",
        )

    # remote

    def _remote(self, spec: str, protocol: str) -> list[Item]:
        fs = self.pool._filesystems.get(protocol)
        root = fs._strip_protocol(spec)
        if _GLOB_MAGIC.search(root):
            return self._glob_remote(spec, fs, root)
        if spec.endswith("/"):
            return self._list_remote(spec, fs, root)
        if spec.lower().endswith(MANIFEST_EXTENSIONS):
            return self._manifest(_canonical(spec, None))
        _forget_listings(fs, root)
        try:
            info = _call_store(fs.info, root)
        except FileNotFoundError:
            raise PoolError(
                f"no such object or prefix: {spec}",
                hint="check the bucket, the path and the endpoint (AWS_ENDPOINT_URL)",
            ) from None
        if info.get("type") == "directory":
            return self._list_remote(spec, fs, root)
        uri = fs.unstrip_protocol(info.get("name", root))
        if not _has_image_extension(uri):
            raise PoolError(
                f"{spec} is neither an image ({_looked_for()}) "
                f"nor a manifest ({', '.join(MANIFEST_EXTENSIONS)})",
                hint="end a prefix with '/' to list it",
            )
        return [Item(uri, _key_from_info(uri, info))]

    def _list_remote(self, spec: str, fs: Any, root: str) -> list[Item]:
        root = root.rstrip("/")
        _forget_listings(fs, root)  # a listing cached earlier in this process may be stale
        found = _call_store(fs.find, root, detail=True)
        _forget_listings(fs, root)  # and holding millions of entries twice helps nobody
        items = [
            Item(uri, _key_from_info(uri, info))
            for name, info in found.items()
            if info.get("type", "file") == "file"
            and _has_image_extension(name)
            and not _has_hidden_part(name[len(root) :])
            for uri in (fs.unstrip_protocol(name),)
        ]
        if not items:
            raise PoolError(
                f"no images found under {spec} (looked for {_looked_for()})",
                hint="check the prefix and the endpoint (AWS_ENDPOINT_URL or storage options)",
            )
        items.sort(key=lambda item: item.uri)
        return items

    def _glob_remote(self, spec: str, fs: Any, pattern: str) -> list[Item]:
        literal = _GLOB_MAGIC.split(pattern, maxsplit=1)[0]
        literal = literal[: literal.rfind("/") + 1]  # the folder the pattern starts below
        _forget_listings(fs, literal.rstrip("/"))
        found = _call_store(fs.glob, pattern, detail=True)
        _forget_listings(fs, literal.rstrip("/"))
        items = [
            Item(uri, _key_from_info(uri, info))
            for name, info in found.items()
            if info.get("type", "file") == "file" and not _has_hidden_part(name[len(literal) :])
            for uri in (fs.unstrip_protocol(name),)
        ]
        if not items:
            raise PoolError(f"no files match {spec}", hint="check the pattern and the prefix")
        items.sort(key=lambda item: item.uri)
        return items

    # manifests

    def _manifest(self, uri: str) -> list[Item]:
        data = self._read_manifest(uri)
        lower = uri.lower()
        text: str | None = None
        if lower.endswith(".csv"):
            # A remembered inventory needs neither decoding nor parsing: bytes -> digest -> items.
            memo = _memo_path(data, self.memo_dir)
            inventory = _read_memo(memo) if memo else None
            if inventory is None:
                text = _decode_manifest(data, uri)
                inventory = _inventory_items(text)
                if inventory is not None and memo:
                    _write_memo(memo, inventory)
            if inventory is not None:
                return inventory
        if text is None:
            text = _decode_manifest(data, uri)
        if lower.endswith(".csv"):
            records = _parse_csv(text, uri)
        elif lower.endswith(".jsonl"):
            records = _parse_jsonl(text, uri)
        else:
            records = _parse_lines(io.StringIO(text), uri)
        entries = self._entries(records, base=_parent(uri))
        if not entries:
            detail = f"; first problem: {self.pool.skipped[0]}" if self.pool.skipped else ""
            raise PoolError(
                f"manifest {uri} lists no usable URI{detail}",
                hint="one URI per line (.txt) or a 'uri' column (.csv, .jsonl)",
            )
        return self._keyed(entries)

    def _read_manifest(self, uri: str) -> bytes:
        protocol, path = _split(uri)
        try:
            if protocol is None:
                with open(path, "rb") as handle:
                    return handle.read()
            return _read_remote(self.pool._filesystems.get(protocol), protocol, path)
        except (FileNotFoundError, ItemError) as error:
            reason = error.reason if isinstance(error, ItemError) else "not found"
            raise PoolError(f"cannot read manifest {uri}: {reason}") from None

    def _entries(self, records: Iterable[tuple[str, Mapping[str, Any]]], base: str) -> list[_Entry]:
        entries: list[_Entry] = []
        for where, record in records:
            raw = record.get("uri")
            if not isinstance(raw, str) or not raw.strip():
                self.pool.skipped.append(f"{where}: {record.get('_problem', 'no uri')}")
                continue
            try:
                uri = _canonical(raw.strip(), base)
            except _BadEntryError as error:
                self.pool.skipped.append(f"{where}: {error}")
                continue
            etag = _normalize_etag(record.get("etag"))
            entries.append(
                _Entry(
                    uri,
                    etag=etag,
                    size=_to_size(record.get("size")),
                    # The key uses the ETag when there is one: skip parsing the time then.
                    mtime_ns=None if etag else _to_ns(record.get("last_modified")),
                    problem=record.get("_item_problem"),
                )
            )
        return entries

    # keys for listed entries

    def _keyed(self, entries: list[_Entry]) -> list[Item]:
        """Items for manifest entries, in order: metadata from the manifest, else a look-up."""
        keys: list[str | _Unreadable | None] = [None] * len(entries)
        local: list[int] = []
        remote: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            # Entries are canonical: local ones are absolute paths, remote ones proto://...
            protocol = entry.uri.split("://", 1)[0] if "://" in entry.uri else None
            if entry.problem:
                keys[index] = _Unreadable(False, entry.problem)
            elif protocol is None:
                local.append(index)
            elif entry.etag or (entry.size is not None and entry.mtime_ns is not None):
                keys[index] = _remote_key(entry.uri, entry.etag, entry.size, entry.mtime_ns)
            else:
                remote.setdefault(protocol, []).append(index)
        if local:
            local_uris = [entries[i].uri for i in local]
            found = _map_chunked(
                _LocalKeys().manifest_key, local_uris, self.threads, min_parallel=256
            )
            for index, key in zip(local, found, strict=True):
                keys[index] = key
        for protocol, indices in remote.items():
            fs = self.pool._filesystems.get(protocol)
            uris = [entries[i].uri for i in indices]
            for folder in {posixpath.dirname(fs._strip_protocol(uri)) for uri in uris}:
                fs.invalidate_cache(folder)  # info() answers from cached listings when it can
            found_remote = _map_chunked(partial(_remote_item_key, fs), uris, self.threads)
            failures = [key for key in found_remote if isinstance(key, _Unreadable)]
            broken = [failure for failure in failures if not failure.missing]
            if broken and len(failures) == len(found_remote):  # nothing answered: the store is
                reason = broken[0].reason.removeprefix("unreadable: ")
                raise PoolError(  # unreachable or refuses us, not N items broken one by one
                    f"cannot reach {protocol}:// storage: {reason}",
                    hint="check credentials and the endpoint (AWS_ENDPOINT_URL or options)",
                )
            for index, answer in zip(indices, found_remote, strict=True):
                keys[index] = answer
        unreadable = self.pool.unreadable
        return [
            _item(entry.uri, key or "", unreadable)
            for entry, key in zip(entries, keys, strict=True)
        ]


def _remote_item_key(fs: Any, uri: str) -> str | _Unreadable:
    try:
        info = fs.info(fs._strip_protocol(uri))
    except FileNotFoundError:
        return _Unreadable(True, "not found")
    except Exception as error:  # recorded on the item; the pool goes on
        return _Unreadable(False, f"unreadable: {type(error).__name__}: {_one_line(error)}")
    if info.get("type") == "directory":
        return _Unreadable(True, "unreadable: is a directory")
    return _key_from_info(uri, info)


class _LocalKeys:
    """Keys of local files: one ``lstat`` each, real paths from cached real folder paths.

    ``os.path.realpath`` costs an ``lstat`` per path component; only symlinks need it.
    One instance per resolve, so a folder re-linked later is not served from a stale cache.
    """

    def __init__(self) -> None:
        self._real_folders: dict[str, str] = {}

    def key(self, path: str) -> str | _Unreadable | None:
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
            return _local_problem(path, error)
        if not stat.S_ISREG(info.st_mode):
            return None
        return _local_key(real, info.st_size, info.st_mtime_ns)

    def manifest_key(self, path: str) -> str | _Unreadable:
        """A manifest names items on purpose: a folder there is an unreadable item."""
        return self.key(path) or _Unreadable(False, "unreadable: not a file")

    def _real_folder(self, folder: str) -> str:
        real = self._real_folders.get(folder)
        if real is None:
            real = self._real_folders[folder] = os.path.realpath(folder)
        return real


def _walk_local(root: str, pool: Pool) -> list[Item]:
    """Every image below ``root``, sorted; real paths built from the parent's real path.

    Calling ``realpath`` per file costs several syscalls each; only symlinks need it.
    Symlinked folders are followed once each (cycles are cut by their real path). An entry
    that fails (a dangling link, a link loop, a name too long) is that entry's problem: an
    image-named one becomes an unreadable item, a sub-folder that cannot be listed is noted
    in ``pool.skipped``; only an unlistable ``root`` is a ``PoolError``.
    """
    items: list[Item] = []
    seen = {os.path.realpath(root)}
    stack = [(root, os.path.realpath(root))]
    while stack:
        directory, real_directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            if directory != root:
                reason = error.strerror or _one_line(error)
                pool.skipped.append(f"{directory}: cannot list: {reason}")
                continue
            raise PoolError(
                f"cannot list {directory}: {error.strerror or _one_line(error)}",
                hint="fix its permissions, or point POOL below it",
            ) from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                real = (
                    os.path.realpath(entry.path)
                    if entry.is_symlink()
                    else os.path.join(real_directory, entry.name)
                )
                if entry.is_dir():
                    if real not in seen:
                        seen.add(real)
                        stack.append((entry.path, real))
                    continue
                if not _has_image_extension(entry.name):
                    continue
                info = entry.stat()
            except OSError as error:  # listed with its reason, so embed reports it
                if _has_image_extension(entry.name):
                    items.append(
                        _item(entry.path, _local_problem(entry.path, error), pool.unreadable)
                    )
                continue
            items.append(Item(entry.path, _local_key(real, info.st_size, info.st_mtime_ns)))
    items.sort(key=lambda item: item.uri)
    return items


def _glob_local(spec: str, pattern: str, pool: Pool) -> list[Item]:
    import glob

    keys = _LocalKeys()
    items = [
        _item(path, key, pool.unreadable)
        for path in (os.path.abspath(p) for p in glob.iglob(pattern, recursive=True))
        for key in (keys.key(path),)
        if key is not None  # folders matched by the pattern are not items
    ]
    if not items:
        raise PoolError(f"no files match {spec}", hint="check the pattern and the folder")
    items.sort(key=lambda item: item.uri)
    return items


def _forget_listings(fs: Any, root: str) -> None:
    """Drop the filesystem's cached listings at, above and below ``root``.

    fsspec's ``invalidate_cache(path)`` forgets ``path`` and its parents only, while ``find``
    caches every folder below it; keys built from a stale listing would serve stale embeddings.
    """
    fs.invalidate_cache(root)
    cache = getattr(fs, "dircache", None)
    if cache:
        below = f"{root}/" if root else ""
        for path in [path for path in list(cache) if path.startswith(below)]:
            cache.pop(path, None)


def _call_store(function: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
    """A listing call; store failures other than 'not found' become one-line PoolErrors."""
    try:
        return function(*args, **kwargs)
    except FileNotFoundError:
        raise
    except PermissionError as error:
        raise PoolError(f"access denied listing {args[0]}: {_one_line(error)}") from None
    except Exception as error:
        raise PoolError(
            f"cannot list {args[0]}: {type(error).__name__}: {_one_line(error)}",
            hint="check credentials and the endpoint (AWS_ENDPOINT_URL or storage options)",
        ) from None


# --- manifests ----------------------------------------------------------------------------


def _parse_lines(lines: Iterable[str], name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield f"{name}:{number}", {"uri": text}


def _all_plain_s3(uris: list[str]) -> bool:
    """``_is_plain_s3`` for every URI, by counting over the joined text (C speed): each starts
    with ``s3://`` and a bucket, holds no other ``//``, no trailing slash and no ``?#\\``."""
    text = "\n".join(uris)
    n = len(uris)
    return (
        text.startswith("s3://")
        and text.count("\ns3://") == n - 1
        and text.count("//") == n
        and "s3:///" not in text
        and "/\n" not in text
        and not text.endswith("/")
        and not any(c in text for c in "?#\\\r")
    )


def _all_plain_etags(etags: list[str]) -> bool:
    """No ETag empty, quoted, weak (``W/``) or padded; counted over the joined text."""
    text = "\n".join(etags)
    return (
        all(etags[:1])
        and "\n\n" not in text
        and not text.endswith("\n")
        and not text.startswith("W/")
        and "\nW/" not in text
        and not any(c in text for c in '" \t')
    )


def _inventory_items(text: str) -> list[Item] | None:
    """Bulk path for the S3-Inventory shape: every row a plain ``s3://`` URI with an ETag.

    Gives exactly the keys the general path gives (``_remote_key(uri, etag, ...)``), without a
    function call per field, so a million-line inventory resolves in about a second. Anything
    unusual (another column layout, a blank or odd row, a quoted ETag) returns None and takes
    the general path, which reports problems line by line.
    """
    if "\r\n" in text:  # Python's csv module (and Excel) end rows with CRLF
        text = text.replace("\r\n", "\n")
    header, _, body = text.partition("\n")
    columns = [column.strip().lower() for column in header.split(",")]
    if '"' in text or "\r" in body or "uri" not in columns or "etag" not in columns:
        return None  # quoting or stray CRs: leave it to the csv module on the general path
    u, e = columns.index("uri"), columns.index("etag")
    # Pull the two columns out of every row in one C-level pass; a row with another number
    # of fields does not match, and the count check below sends the file to the general path.
    cells = ["[^,\n]*"] * len(columns)
    cells[u], cells[e] = "([^,\n]*)", "([^,\n]*)"
    pattern = re.compile("^" + ",".join(cells) + "$", re.MULTILINE)
    pairs = pattern.findall(body)
    lines = body.count("\n") + (0 if body.endswith("\n") or not body else 1)
    if not pairs or len(pairs) != lines:
        return None
    if u < e:
        uris, etags = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        etags, uris = [p[0] for p in pairs], [p[1] for p in pairs]
    if not _all_plain_s3(uris) or not _all_plain_etags(etags):
        return None
    prefix = b"etag\0"
    keys = [
        hashlib.blake2b(prefix + _text_bytes(f"{uri}\0{tag}"), digest_size=16).hexdigest()
        for uri, tag in zip(uris, etags, strict=True)
    ]
    return list(map(Item._make, zip(uris, keys, strict=True)))


#: Manifests smaller than this (bytes, about 10,000 lines) are parsed every time: the memo
#: would not pay for its file.
MEMO_MIN_BYTES = 1 << 20
#: Memo files kept (the most recently used); each is about 100 bytes per item.
MEMO_KEEP = 8
_MEMO_MAGIC = "alcli-items-v1"


def _decode_manifest(data: bytes, uri: str) -> str:
    """UTF-8 text; bytes that are not UTF-8 (a file name in another encoding, as ``find``
    lists it) become surrogate escapes like ``os.fsdecode`` makes, so that entry still names
    its file. NUL bytes mean binary or UTF-16, not a list of names."""
    if b"\0" in data:
        raise PoolError(
            f"manifest {uri} is not UTF-8 text (it holds NUL bytes)",
            hint="save it as UTF-8, one URI per line",
        )
    return data.decode("utf-8-sig", "surrogateescape")


def _memo_path(data: bytes, memo_dir: str | None) -> str | None:
    """Where the items of a manifest with these exact bytes are remembered (None: not at all)."""
    if memo_dir is None or len(data) < MEMO_MIN_BYTES:
        return None
    digest = hashlib.blake2b(data, digest_size=20).hexdigest()
    return os.path.join(memo_dir, f"{digest}.items")


def _read_memo(path: str) -> list[Item] | None:
    """The remembered items, or None for a missing or unreadable memo (it only saves time)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            head, _, rest = handle.read().partition("\n")
    except (OSError, UnicodeDecodeError):
        return None
    magic, _, count_text = head.partition(" ")
    fields = rest.split("\n")
    if magic != _MEMO_MAGIC or not count_text.isdigit() or len(fields) != 2 * int(count_text):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: kept by the pruning in _write_memo
    count = int(count_text)
    return list(map(Item._make, zip(fields[:count], fields[count:], strict=True)))


def _write_memo(path: str, items: list[Item]) -> None:
    """Write atomically (temp file + rename); then drop all but the MEMO_KEEP newest memos.

    One URI per line: inventory URIs come from single CSV lines, so none holds a newline.
    """
    memo_dir = os.path.dirname(path)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(memo_dir, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            handle.write(f"{_MEMO_MAGIC} {len(items)}\n")
            handle.write("\n".join(item.uri for item in items))
            handle.write("\n")
            handle.write("\n".join(item.key for item in items))
        os.replace(tmp, path)
        memos = sorted(
            (entry for entry in os.scandir(memo_dir) if entry.name.endswith(".items")),
            key=lambda entry: entry.stat().st_mtime_ns,
            reverse=True,
        )
        for entry in memos[MEMO_KEEP:]:
            os.unlink(entry.path)
    except OSError:  # a read-only or full cache folder: resolving still worked
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _parse_csv(text: str, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise PoolError(f"manifest {name} is empty", hint="add a header row with a 'uri' column")
    columns = [column.strip().lower() for column in header]
    if "uri" not in columns:
        raise PoolError(
            f"manifest {name} has no 'uri' column (columns: {', '.join(header) or 'none'})",
            hint="add a header row naming the column of URIs 'uri'",
        )
    uri_column = columns.index("uri")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{name}:{reader.line_num}"
        record: dict[str, Any] = dict(zip(columns, row, strict=False))
        if len(row) > len(columns):
            # Most likely an unquoted comma in a URI: name the item by the whole text when the
            # uri is the last column, and report it rather than guess which file was meant.
            if uri_column == len(columns) - 1:
                record["uri"] = ",".join(row[uri_column:])
            record["_item_problem"] = (
                f"bad manifest row {where}: {len(row)} fields for {len(columns)} columns"
                " (quote a URI that holds a comma)"
            )
        yield where, record


def _parse_jsonl(text: str, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            yield where, {"_problem": "not JSON"}
            continue
        if not isinstance(record, dict):
            yield where, {"_problem": "not a JSON object"}
            continue
        yield where, record


# --- duplicates and content keys ----------------------------------------------------------


def _drop_duplicates(items: list[Item], duplicates: list[str]) -> list[Item]:
    """First occurrence kept; each repeated URI reported once, in order of first repeat."""
    if len({item.uri for item in items}) == len(items):
        return items  # the usual case, checked in one pass
    seen: set[str] = set()
    reported: set[str] = set()
    kept: list[Item] = []
    for item in items:
        if item.uri in seen:
            if item.uri not in reported:
                reported.add(item.uri)
                duplicates.append(item.uri)
            continue
        seen.add(item.uri)
        kept.append(item)
    return kept


def _content_keyed(pool: Pool, items: list[Item], threads: int) -> list[Item]:
    """Re-key items on their bytes, read on a thread pool; unreadable ones stay listed."""

    def key_of(item: Item) -> str | _Unreadable:
        if item.unreadable:  # resolving already failed it, with its reason
            return _Unreadable(False, pool.unreadable.get(item.uri, "unreadable"))
        try:
            return _content_key(pool.read(item.uri))
        except ItemError as error:
            return _Unreadable(error.reason == "not found", error.reason)

    keys = _map_chunked(key_of, items, threads)
    return [_item(item.uri, key, pool.unreadable) for item, key in zip(items, keys, strict=True)]


def _map_chunked(
    function: Callable[[_T], _R], values: Sequence[_T], threads: int, *, min_parallel: int = 2
) -> list[_R]:
    """``map`` on a bounded thread pool, in order.

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


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
