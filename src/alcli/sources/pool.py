"""The resolved POOL: ``Item`` (uri, key) in a fixed order, and what was dropped and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from alcli.sources.keys import UNREADABLE_KEY_PREFIX, Unreadable, unreadable_key
from alcli.sources.reading import FileSystems, read_item


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
    items: Sequence[Item]
    """A list, or for a remembered manifest an ``ItemTable`` (columns; items built on access)."""
    duplicates: list[str] = field(default_factory=list)
    storage_options: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    """Manifest lines and folders that were ignored, as ``"manifest.csv:7: no uri"``."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """URI -> why resolving could not use it ("not found", ...), for unreadable items."""
    _filesystems: FileSystems = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._filesystems = FileSystems(self.storage_options)

    @property
    def uris(self) -> Sequence[str]:
        """The URIs: a list, or a table's lazy column (``find`` locates a few of them)."""
        column = getattr(self.items, "uris", None)
        if column is not None:
            return column
        return [item.uri for item in self.items]

    @property
    def filesystems(self) -> FileSystems:
        """The pool's filesystems, one per protocol, shared by resolving and reading."""
        return self._filesystems

    def read(self, uri: str, timeout: float | None = None) -> bytes:
        """The item's bytes; safe to call from many threads (one filesystem per protocol).

        Raises ``ItemError`` ("not found", "empty file", "unreadable: ...") for a bad item, and
        its kind ``StoreUnreachableError`` when the store did not answer ("connection failed: ...",
        or "timed out after T s": a remote read with all its retries takes at most ``timeout``
        seconds, then it is cancelled). Local reads cannot be cancelled; the pipeline's own
        deadline covers them. One GET per remote item (s3fs would otherwise HEAD first), a
        plain ``open().read()`` locally.
        """
        return read_item(self._filesystems, uri, timeout)


def make_item(uri: str, key: str | Unreadable, unreadable: dict[str, str]) -> Item:
    """The item for ``uri``; an unreadable one gets an unreadable key, its reason noted."""
    if isinstance(key, Unreadable):
        unreadable[uri] = key.reason
        return Item(uri, unreadable_key(uri))
    return Item(uri, key)
