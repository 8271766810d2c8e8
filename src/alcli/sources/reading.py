"""An item's bytes: one filesystem per protocol, one GET per remote item, a deadline, and
which failures are the item's (``ItemError``) and which the store's (``StoreUnreachableError``).

S3 object GETs go through obstore when it can serve the pool's options (``objectstore.py``:
a third of s3fs's CPU per GET), everything else through fsspec. S3 settings (endpoint, profile,
credentials) come from the usual AWS environment and config
files through botocore, which already honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``
and ``AWS_PROFILE``; ``storage_options`` are passed as they are to every non-local
filesystem the pool uses (``s3_options`` builds the common ones).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.exceptions import FSTimeoutError

from alcli.errors import ItemError, PoolError, StoreUnreachableError, one_line
from alcli.sources.keys import os_reason
from alcli.sources.objectstore import FastS3
from alcli.sources.uris import split_uri


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


class FileSystems:
    """One fsspec filesystem per protocol, created on first use and shared by all threads."""

    def __init__(self, storage_options: Mapping[str, Any]) -> None:
        self._options = dict(storage_options)
        self._by_protocol: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._fast: FastS3 | None = None
        self._fast_built = False

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the options: filesystems and locks are rebuilt where unpickled."""
        return {"options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._options = state["options"]
        self._by_protocol = {}
        self._lock = threading.Lock()
        self._fast = None
        self._fast_built = False

    def fast_s3(self) -> FastS3 | None:
        """The obstore client for S3 GETs, or None when fsspec must serve them."""
        if not self._fast_built:
            with self._lock:
                if not self._fast_built:
                    self._fast = FastS3.from_options(self._options)
                    self._fast_built = True
        return self._fast

    def fast_s3_for(self, protocol: str) -> FastS3 | None:
        """``fast_s3()`` for an S3 protocol, else None."""
        return self.fast_s3() if protocol in _S3 else None

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
                        f"cannot open {protocol}:// storage: {one_line(error)}",
                        hint="check the protocol's package and the storage options",
                    ) from None
            return self._by_protocol[protocol]


def read_item(filesystems: FileSystems, uri: str, timeout: float | None = None) -> bytes:
    """What ``Pool.read`` does (see there); an empty file is a bad item too."""
    protocol, path = split_uri(uri)
    if protocol is None:
        data = read_local(path)
    elif protocol in _S3 and (fast := filesystems.fast_s3()) is not None:
        data = read_s3_fast(fast, filesystems, protocol, path, timeout)
    else:
        data = read_remote(filesystems.get(protocol), protocol, path, timeout)
    if not data:
        raise ItemError("empty file")
    return data


def read_s3_fast(
    fast: FastS3, filesystems: FileSystems, protocol: str, path: str, timeout: float | None
) -> bytes:
    """One obstore GET, its failures sorted as ``read_remote`` sorts fsspec's; an answer that
    is neither the object nor a known refusal is asked of fsspec, and when fsspec reads it the
    bucket stays with fsspec (a transient failure both see moves nothing)."""
    bucket, _, key = path.partition("/")
    if not fast.serves(bucket) or not key:
        return read_remote(filesystems.get(protocol), protocol, path, timeout)
    try:
        return fast.get(bucket, key, timeout)
    except FileNotFoundError:
        raise ItemError("not found") from None
    except Exception as error:
        name = type(error).__name__
        if name in ("PermissionDeniedError", "UnauthenticatedError"):
            raise ItemError("unreadable: access denied") from None
        if timeout and any(sign in str(error) for sign in _OBSTORE_TIMEOUT_SIGNS):
            raise StoreUnreachableError.timed_out(timeout) from None  # the deadline's budget
        detail = one_line(error)
        if any(sign in detail for sign in _OBSTORE_CONNECTION_SIGNS):
            raise StoreUnreachableError(f"connection failed: {name}: {detail}") from None
    data = read_remote(filesystems.get(protocol), protocol, path, timeout)
    fast.give_up(bucket)  # s3fs could (a bucket in another region, say): it reads this bucket
    return data


_S3 = frozenset({"s3", "s3a"})
#: How obstore (reqwest) words a request past its timeout, in its error's debug text.
_OBSTORE_TIMEOUT_SIGNS = ("kind: Timeout", "TimedOut")
#: How obstore (reqwest/hyper) words a store that could not be reached at all.
_OBSTORE_CONNECTION_SIGNS = (
    "error sending request",
    "Connection refused",
    "connection closed",
    "Connection reset",
    "dns error",
    "operation timed out",
)


def read_local(path: str) -> bytes:
    """Plain unbuffered ``open().read()``: the fastest way to read a small local file."""
    try:
        with open(path, "rb", buffering=0) as handle:
            return handle.readall()
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        raise ItemError(os_reason(error)) from None


def read_remote(fs: Any, protocol: str, path: str, timeout: float | None = None) -> bytes:
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
        detail = f"{type(error).__name__}: {one_line(error)}"
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
