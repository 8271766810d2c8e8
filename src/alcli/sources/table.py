"""A large pool's items as columns, not objects: what a remembered manifest loads as.

Ten million ``Item`` tuples of two str cost ~2.5 GiB and ~40 s to build, before a single row
is read; ``select`` needs only the keys (as raw bytes, for the cache's key index), the few
labeled URIs' positions and the picked items' URIs. ``ItemTable`` holds the URIs as one UTF-8
buffer with offsets, the keys as fixed-width raw bytes, and the URIs' sort order; it is a
``Sequence[Item]`` whose items are built on access, so every caller that iterates or indexes
a pool keeps working. The memo file is the same columns on disk, memory-mapped: opening a
10M-item memo reads a page, and only the columns a run touches come in.

Memo file: a 4 KiB JSON header (``magic``, ``n``, ``key_width``, ``sorted``, ``distinct``,
each column's byte offset), then the columns, 64-byte aligned: ``offsets`` int64 [n + 1],
``keys`` uint8 [n, key_width], ``order`` int64 [n] (absent when the URIs are already in
order), ``uris`` the concatenated UTF-8 (``surrogateescape``) bytes.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import operator
import os
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice, pairwise
from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from alcli.sources.pool import Item

_MAGIC = "alcli-item-table-v1"
_HEADER = 4096
_ALIGN = 64
I64 = npt.NDArray[np.int64]
T = TypeVar("T")


class _Column(Sequence[T]):
    """A sequence whose elements are made on access by ``_at(index)``; a slice is a list."""

    def _at(self, index: int) -> T:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        return self._at(index)

    def __iter__(self) -> Iterator[T]:
        for i in range(len(self)):
            yield self._at(i)


class HexKeys(_Column[str]):
    """Fixed-width keys as raw bytes [n, width]; ``keys[i]`` is the hex str items carry, and
    the cache encodes ``raw`` directly (``alcli.cache.keys.encode_keys``) with no str at all."""

    def __init__(self, raw: npt.NDArray[np.uint8]) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def _at(self, index: int) -> str:
        return self.raw[index].tobytes().hex()


class ItemTable(_Column[Item]):
    """Items as columns (see the module docstring); ``rows``: the positions of the base table
    this one keeps (ascending), None for all of them."""

    def __init__(
        self,
        uri_bytes: Any,
        offsets: I64,
        keys: npt.NDArray[np.uint8],
        order: I64 | None,
        *,
        distinct: bool,
        rows: I64 | None = None,
    ) -> None:
        self._bytes = uri_bytes  # bytes, mmap or a uint8 array: anything sliceable to bytes
        self._offsets = offsets
        self._keys = keys
        self._order = order  # base positions in URI order; None: already in order
        self.distinct = distinct  # no URI twice (checked when the table was made)
        self._rows = rows

    # --- the Sequence[Item] every caller already uses ---

    def __len__(self) -> int:
        return len(self._keys) if self._rows is None else len(self._rows)

    def _at(self, index: int) -> Item:
        base = self._base(index)
        return Item(self._uri(base), self._keys[base].tobytes().hex())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(map(operator.eq, self, other))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list

    def __repr__(self) -> str:
        return f"ItemTable({len(self):,} items)"

    # --- columns ---

    @property
    def uris(self) -> UriColumn:
        return UriColumn(self)

    @property
    def keys(self) -> HexKeys:
        """The keys, raw (a view of the memo for a whole table, a copy for a subset)."""
        return HexKeys(self._keys if self._rows is None else self._keys[self._rows])

    def take(self, positions: Iterable[int] | I64) -> ItemTable:
        """The items at ``positions`` (ascending) as a table of their own, nothing copied but
        the positions."""
        at = np.asarray(positions, dtype=np.int64)
        rows = at if self._rows is None else self._rows[at]
        return ItemTable(
            self._bytes, self._offsets, self._keys, self._order, distinct=self.distinct, rows=rows
        )

    def find(self, uris: Iterable[str]) -> I64:
        """The position of each URI in this table, -1 where it has none: a binary search of the
        URI order each (24 steps for 10M items), no map of the pool."""
        n = len(self._keys)
        found = []
        for uri in uris:
            wanted = uri.encode("utf-8", "surrogateescape")
            at = bisect_left(_SortedUris(self, n), wanted)
            base = -1
            if at < n:
                candidate = at if self._order is None else int(self._order[at])
                if self._uri_bytes(candidate) == wanted:
                    base = candidate
            found.append(base)
        bases = np.asarray(found, dtype=np.int64)
        if self._rows is None or not len(bases):
            return bases
        if not len(self._rows):
            return np.full(len(bases), -1, dtype=np.int64)
        where = np.minimum(np.searchsorted(self._rows, bases), len(self._rows) - 1)
        hit = (bases >= 0) & (self._rows[where] == bases)
        return np.where(hit, where, -1).astype(np.int64)

    def uri(self, index: int) -> str:
        return self._uri(self._base(index))

    # --- internals ---

    def _base(self, index: int) -> int:
        index = operator.index(index)
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("item index out of range")
        return index if self._rows is None else int(self._rows[index])

    def _uri_bytes(self, base: int) -> bytes:
        return bytes(self._bytes[int(self._offsets[base]) : int(self._offsets[base + 1])])

    def _uri(self, base: int) -> str:
        return self._uri_bytes(base).decode("utf-8", "surrogateescape")


class _SortedUris(Sequence[bytes]):
    """The base table's URIs in sort order, as bytes, for ``bisect``."""

    def __init__(self, table: ItemTable, n: int) -> None:
        self.table, self.n = table, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        order = self.table._order
        return self.table._uri_bytes(i if order is None else int(order[i]))


class UriColumn(_Column[str]):
    """A table's URIs as a ``Sequence[str]``, decoded on access; ``find`` locates a few."""

    def __init__(self, table: ItemTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def _at(self, index: int) -> str:
        return self.table.uri(index)

    def find(self, uris: Iterable[str]) -> I64:
        return self.table.find(uris)


# --- making one, and the memo file ---------------------------------------------------------


def from_items(items: Sequence[Item]) -> ItemTable | None:
    """The table of ``items``; None when their keys are not all hex of one even length (only
    such keys have a fixed-width raw form; inventories' keys are all 32-digit digests)."""
    n = len(items)
    uris = [item.uri for item in items]
    keys = [item.key for item in items]
    if not n or len(set(map(len, keys))) != 1 or len(keys[0]) % 2:
        return None
    try:
        raw_keys = bytes.fromhex("".join(keys))
    except ValueError:
        return None
    width = len(keys[0]) // 2
    if len(raw_keys) != n * width:  # fromhex skips whitespace
        return None
    del keys
    text = "".join(uris)
    encoded = text.encode("utf-8", "surrogateescape")
    ascii_only = len(encoded) == len(text)  # then characters are bytes
    del text
    offsets = np.zeros(n + 1, dtype=np.int64)
    if ascii_only:
        np.cumsum(np.fromiter(map(len, uris), dtype=np.int64, count=n), out=offsets[1:])
    else:
        lengths = (len(uri.encode("utf-8", "surrogateescape")) for uri in uris)
        np.cumsum(np.fromiter(lengths, dtype=np.int64, count=n), out=offsets[1:])
    order: I64 | None = None
    # ``find`` searches byte order, which for ASCII is str order (the usual, cheap check).
    in_order = ascii_only and all(map(operator.lt, uris, islice(uris, 1, None)))
    distinct = in_order  # strictly increasing: no URI twice
    if not in_order:
        order = np.asarray(
            sorted(range(n), key=lambda i: encoded[offsets[i] : offsets[i + 1]]), dtype=np.int64
        )
        distinct = not any(
            encoded[offsets[a] : offsets[a + 1]] == encoded[offsets[b] : offsets[b + 1]]
            for a, b in pairwise(order.tolist())
        )
        if (order == np.arange(n)).all() and distinct:
            order = None
    raw = np.frombuffer(raw_keys, dtype=np.uint8).reshape(n, width)
    return ItemTable(encoded, offsets, raw, order, distinct=distinct)


def write_table(path: str, table: ItemTable) -> bool:
    """The table as a memo file, atomically (temp file + rename); False when it cannot be
    written (a read-only or full folder: resolving still worked)."""
    table = table if table._rows is None else from_items(table) or table  # a subset: its own
    n = len(table)
    keys = np.ascontiguousarray(table._keys)
    sections: list[tuple[str, Any]] = [("offsets", np.ascontiguousarray(table._offsets))]
    sections.append(("keys", keys))
    if table._order is not None:
        sections.append(("order", np.ascontiguousarray(table._order)))
    uri_bytes = memoryview(table._bytes)[: int(table._offsets[-1])]
    sections.append(("uris", uri_bytes))
    header: dict[str, Any] = {
        "magic": _MAGIC,
        "n": n,
        "key_width": int(keys.shape[1]) if keys.ndim == 2 else 0,
        "distinct": table.distinct,
        "sections": {},
    }
    at = _HEADER
    for name, data in sections:
        size = data.nbytes
        header["sections"][name] = [at, size]
        at += -(-size // _ALIGN) * _ALIGN
    head = json.dumps(header).encode()
    if len(head) >= _HEADER:
        return False
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(head.ljust(_HEADER, b" "))
            for name, data in sections:
                offset, size = header["sections"][name]
                handle.seek(offset)
                handle.write(memoryview(data).cast("B") if size else b"")
            handle.truncate(at)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def read_table(path: str) -> ItemTable | None:
    """The memo file as a table, memory-mapped; None when missing, torn or not one."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < _HEADER:
                return None
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    try:
        header = json.loads(bytes(mapped[:_HEADER]).decode().strip())
        n, width = int(header["n"]), int(header["key_width"])
        sections = {name: (int(a), int(b)) for name, (a, b) in header["sections"].items()}
        if header.get("magic") != _MAGIC or any(a + b > size for a, b in sections.values()):
            return None

        def column(name: str, dtype: Any, count: int) -> Any:
            offset, nbytes = sections[name]
            if nbytes != count * np.dtype(dtype).itemsize:
                raise ValueError(name)
            return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)

        offsets = column("offsets", np.int64, n + 1)
        keys = column("keys", np.uint8, n * width).reshape(n, width)
        order = column("order", np.int64, n) if "order" in sections else None
        start, length = sections["uris"]
        if int(offsets[-1]) != length or int(offsets[0]) != 0:
            return None
        uri_bytes = np.frombuffer(mapped, dtype=np.uint8, count=length, offset=start)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return ItemTable(uri_bytes, offsets, keys, order, distinct=bool(header["distinct"]))
