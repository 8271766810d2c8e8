"""Manifests with ETags (a ``.csv`` with ``uri`` and ``etag`` columns): the bulk path and its memo,
a million lines in about a second, then none.

Not an S3 Inventory report (``s3inventory.py`` reads those: headerless, gzipped, a
``manifest.json``), but what a team exports from one, or from a listing. A manifest whose rows
are all plain ``s3://`` URIs with an ETag is keyed in bulk, with exactly
the keys the general path gives. Parsing still costs seconds of Python, so with a memo folder
the items are remembered under the digest of the manifest's bytes: the next resolution of the
same file (a warm ``select`` every round) reads them back without decoding or parsing it. Keys
there are a pure function of the bytes, so the memo cannot go stale; local items are never
memoised (their keys come from ``stat``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from alcli.sources.keys import text_bytes
from alcli.sources.pool import Item
from alcli.sources.table import ItemTable, from_items, read_table, write_table

#: Manifests smaller than this (bytes, about 10,000 lines) are parsed every time: the memo
#: would not pay for its file.
MEMO_MIN_BYTES = 1 << 20
#: Memo files kept (the most recently used); each is about 60 bytes per item.
MEMO_KEEP = 8
#: Where the digests of local manifests are remembered, by their files' identity.
_DIGESTS = "digests.json"
#: A file changed this close to being hashed is hashed again next time (nanoseconds).
_RACY_NS = 2_000_000_000
#: A memo file's name: the digest, then this.
MEMO_SUFFIX = ".table"
_LEGACY_SUFFIX, _LEGACY_MAGIC = ".items", "alcli-items-v1"  # text memos of earlier versions


class InventoryMemo:
    """The inventory items of one manifest's bytes: remembered, or parsed and remembered."""

    def __init__(self, data: bytes | None, memo_dir: str | None, digest: str | None = None) -> None:
        self.path = _memo_path(data, memo_dir, digest)

    def recall(self) -> Sequence[Item] | None:
        """The remembered items (an ``ItemTable``); None when not remembered (or not worth
        remembering)."""
        return read_memo(self.path) if self.path else None

    def parse(self, text: str) -> list[Item] | None:
        """The items when ``text`` has the inventory shape (remembered then), else None."""
        items = _inventory_items(text)
        if items is not None and self.path:
            write_memo(self.path, items)
        return items


def file_digest(path: str, memo_dir: str) -> str | None:
    """The memo digest of a local file's bytes, read in blocks (a 10M-line manifest is ~1 GB:
    hashing it needs no copy of it in memory); None when too small to memoise or unreadable.

    Hashing a gigabyte still takes seconds, so the digest is remembered beside the memos with
    the file's identity (device, inode, size, mtime, ctime), as git's index remembers a
    file's hash: an unchanged file is not read again. A file changed within
    ``_RACY_NS`` of being hashed is hashed every time (a change in the same tick would not
    show in its times)."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_size < MEMO_MIN_BYTES:
                return None
            stamp = [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
            stamps_path = os.path.join(memo_dir, _DIGESTS)
            stamps: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError), open(stamps_path, "rb") as f:
                stamps = json.load(f)
            known = stamps.get(os.path.realpath(path)) if isinstance(stamps, dict) else None
            if isinstance(known, list) and known[:5] == stamp and isinstance(known[5], str):
                return known[5]
            hashed_at = time.time_ns()
            digest = hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=20))
    except OSError:
        return None
    if hashed_at - max(info.st_mtime_ns, info.st_ctime_ns) >= _RACY_NS:
        stamps = stamps if isinstance(stamps, dict) else {}
        stamps[os.path.realpath(path)] = [*stamp, digest.hexdigest()]
        for stale in list(stamps)[: max(0, len(stamps) - 4 * MEMO_KEEP)]:  # oldest first
            del stamps[stale]
        tmp = f"{stamps_path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(memo_dir, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(stamps, f)
            os.replace(tmp, stamps_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return digest.hexdigest()


def _all_plain_s3(uris: list[str]) -> bool:
    """``is_plain_s3`` for every URI, by counting over the joined text (C speed): each starts
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

    Gives exactly the keys the general path gives (``remote_key(uri, etag, ...)``), without a
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
        hashlib.blake2b(prefix + text_bytes(f"{uri}\0{tag}"), digest_size=16).hexdigest()
        for uri, tag in zip(uris, etags, strict=True)
    ]
    return list(map(Item._make, zip(uris, keys, strict=True)))


def _memo_path(data: bytes | None, memo_dir: str | None, digest: str | None = None) -> str | None:
    """Where the items of a manifest with these exact bytes are remembered (None: not at all)."""
    if memo_dir is None:
        return None
    if digest is None:
        if data is None or len(data) < MEMO_MIN_BYTES:
            return None
        digest = hashlib.blake2b(data, digest_size=20).hexdigest()
    return os.path.join(memo_dir, f"{digest}{MEMO_SUFFIX}")


def read_memo(path: str) -> Sequence[Item] | None:
    """The remembered items as a memory-mapped ``ItemTable``, or None for a missing or
    unreadable memo (it only saves time). A memo of the text form earlier versions wrote
    (``.items``) is read once and rewritten as a table."""
    table = read_table(path)
    if table is not None:
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: kept by the pruning in write_memo
        return table
    legacy = path.removesuffix(MEMO_SUFFIX) + _LEGACY_SUFFIX
    items = _read_legacy_memo(legacy)
    if items is not None:
        write_memo(path, items)
        with contextlib.suppress(OSError):
            os.unlink(legacy)
    return items


def _read_legacy_memo(path: str) -> list[Item] | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            head, _, rest = handle.read().partition("\n")
    except (OSError, UnicodeDecodeError):
        return None
    magic, _, count_text = head.partition(" ")
    fields = rest.split("\n")
    if magic != _LEGACY_MAGIC or not count_text.isdigit() or len(fields) != 2 * int(count_text):
        return None
    count = int(count_text)
    return list(map(Item._make, zip(fields[:count], fields[count:], strict=True)))


def write_memo(path: str, items: Sequence[Item]) -> None:
    """Write the items as a table file (``table.write_table``: temp file + rename); then drop
    all but the MEMO_KEEP newest memos. Items whose keys have no fixed-width form are not
    remembered (inventories' keys all have one)."""
    table = items if isinstance(items, ItemTable) else from_items(items)
    if table is None or not write_table(path, table):
        return
    memo_dir = os.path.dirname(path)
    try:
        memos = sorted(
            (
                entry
                for entry in os.scandir(memo_dir)
                if entry.name.endswith((MEMO_SUFFIX, _LEGACY_SUFFIX))
            ),
            key=lambda entry: entry.stat().st_mtime_ns,
            reverse=True,
        )
        for entry in memos[MEMO_KEEP:]:
            os.unlink(entry.path)
    except OSError:  # a read-only or full cache folder: resolving still worked
        pass
