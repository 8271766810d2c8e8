"""Manifests -> items: ``.txt`` (one URI a line), ``.csv`` / ``.jsonl`` (a ``uri`` column), stdin.

Relative entries resolve against the manifest's own folder (stdin's against the current
directory). A ``.csv`` or ``.jsonl`` row may carry ``etag``, ``size`` and ``last_modified`` for
a remote item, as an S3 Inventory report does; such items are keyed without any request, the
others with one ``info`` (remote) or ``lstat`` (local) each, on a thread pool. Bad lines are
skipped into ``Pool.skipped`` with their line number. ``CsvTable`` is the one reader of a CSV
with a header row (a ``uri`` column) that labels files and URI lists share.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from alcli.errors import ItemError, PoolError
from alcli.sources.etag_manifests import InventoryMemo, file_digest
from alcli.sources.keys import (
    LocalKeys,
    Unreadable,
    map_chunked,
    normalize_etag,
    remote_item_key,
    remote_key,
    to_ns,
    to_size,
)
from alcli.sources.pool import Item, Pool, make_item
from alcli.sources.reading import read_remote
from alcli.sources.uris import BadEntryError, canonical, parent, split_uri

Records = Iterator[tuple[str, Mapping[str, Any]]]
"""(where: ``name:line``, the row's fields by lower-case column name) for each line."""


class CsvTable:
    """A CSV read through its header row: columns by (stripped, lower-case) name, then rows.

    Blank rows (every cell empty or spaces) are skipped; ``line`` is the reader's line number,
    which counts the lines inside quoted cells too, so messages name the line a person sees.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self._reader = csv.reader(lines)
        self.header: list[str] | None = next(self._reader, None)
        self.columns = [column.strip().lower() for column in self.header or []]

    @property
    def line(self) -> int:
        return self._reader.line_num

    def rows(self) -> Iterator[list[str]]:
        for row in self._reader:
            if any(cell.strip() for cell in row):
                yield row


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """A manifest line, canonicalised, with whatever metadata the manifest carried."""

    uri: str
    etag: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    problem: str | None = None  # the line names an item but is malformed: unreadable, why


class ManifestReader:
    """Manifests (and stdin) of one pool into keyed items, ``threads`` look-ups at a time."""

    def __init__(self, pool: Pool, threads: int, memo_dir: str | None = None) -> None:
        self.pool = pool
        self.threads = threads
        self.memo_dir = memo_dir

    def items(self, uri: str) -> Sequence[Item]:
        """The items the manifest at ``uri`` lists, in its order."""
        lower = uri.lower()
        digest = None
        if lower.endswith(".csv") and self.memo_dir is not None and split_uri(uri)[0] is None:
            # A local manifest is hashed in blocks: when remembered, it is never held whole.
            digest = file_digest(split_uri(uri)[1], self.memo_dir)
            if digest is not None:
                remembered = InventoryMemo(None, self.memo_dir, digest).recall()
                if remembered is not None:
                    return remembered
        data = self._read(uri)
        text: str | None = None
        if lower.endswith(".csv"):
            # A remembered inventory needs neither decoding nor parsing: bytes -> digest -> items.
            memo = InventoryMemo(data, self.memo_dir)  # these bytes' digest (the file may
            # have changed since it was hashed above)
            inventory = memo.recall()
            if inventory is None:
                text = decode_manifest(data, uri)
                inventory = memo.parse(text)
            if inventory is not None:
                return inventory
        if text is None:
            text = decode_manifest(data, uri)
        if lower.endswith(".csv"):
            records = parse_csv(text, uri)
        elif lower.endswith(".jsonl"):
            records = parse_jsonl(text, uri)
        else:
            records = parse_lines(io.StringIO(text), uri)
        entries = self._entries(records, base=parent(uri))
        if not entries:
            detail = f"; first problem: {self.pool.skipped[0]}" if self.pool.skipped else ""
            raise PoolError(
                f"manifest {uri} lists no usable URI{detail}",
                hint="one URI per line (.txt) or a 'uri' column (.csv, .jsonl)",
            )
        return self.keyed(entries)

    def from_stdin(self, stream: Iterable[str]) -> list[Item]:
        """URIs on stdin, one a line, like a ``.txt`` manifest in the current directory."""
        isatty = getattr(stream, "isatty", None)
        if callable(isatty) and isatty():
            raise PoolError(
                "POOL is '-' but stdin is a terminal", hint="pipe URIs in, one per line"
            )
        records = parse_lines(stream, "<stdin>")
        entries = self._entries(records, base=os.getcwd())
        if not entries:
            raise PoolError(
                "no URIs on stdin",
                hint="pipe one URI per line, e.g. find data -name '*.png' | alcli embed -",
            )
        return self.keyed(entries)

    def keyed(self, entries: list[ManifestEntry]) -> list[Item]:
        """Items for manifest entries, in order: metadata from the manifest, else a look-up."""
        keys: list[str | Unreadable | None] = [None] * len(entries)
        local: list[int] = []
        remote: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            # Entries are canonical: local ones are absolute paths, remote ones proto://...
            protocol = entry.uri.split("://", 1)[0] if "://" in entry.uri else None
            if entry.problem:
                keys[index] = Unreadable(False, entry.problem)
            elif protocol is None:
                local.append(index)
            elif entry.etag or (entry.size is not None and entry.mtime_ns is not None):
                keys[index] = remote_key(entry.uri, entry.etag, entry.size, entry.mtime_ns)
            else:
                remote.setdefault(protocol, []).append(index)
        if local:
            local_uris = [entries[i].uri for i in local]
            found = map_chunked(
                LocalKeys().manifest_key, local_uris, self.threads, min_parallel=256
            )
            for index, key in zip(local, found, strict=True):
                keys[index] = key
        for protocol, indices in remote.items():
            found_remote = self._look_up(protocol, [entries[i].uri for i in indices])
            for index, answer in zip(indices, found_remote, strict=True):
                keys[index] = answer
        unreadable = self.pool.unreadable
        return [
            make_item(entry.uri, key or "", unreadable)
            for entry, key in zip(entries, keys, strict=True)
        ]

    def _look_up(self, protocol: str, uris: list[str]) -> list[str | Unreadable]:
        """One ``info`` per URI; a store that answers none of them (not even 'not found') is
        unreachable or refuses us: a ``PoolError``, not N items broken one by one."""
        fs = self.pool.filesystems.get(protocol)
        for folder in {posixpath.dirname(fs._strip_protocol(uri)) for uri in uris}:
            fs.invalidate_cache(folder)  # info() answers from cached listings when it can
        found = map_chunked(partial(remote_item_key, fs), uris, self.threads)
        failures = [key for key in found if isinstance(key, Unreadable)]
        broken = [failure for failure in failures if not failure.missing]
        if broken and len(failures) == len(found):
            reason = broken[0].reason.removeprefix("unreadable: ")
            raise PoolError(
                f"cannot reach {protocol}:// storage: {reason}",
                hint="check credentials and the endpoint (AWS_ENDPOINT_URL or options)",
            )
        return found

    def _read(self, uri: str) -> bytes:
        protocol, path = split_uri(uri)
        try:
            if protocol is None:
                with open(path, "rb") as handle:
                    return handle.read()
            return read_remote(self.pool.filesystems.get(protocol), protocol, path)
        except (FileNotFoundError, ItemError) as error:
            reason = error.reason if isinstance(error, ItemError) else "not found"
            raise PoolError(f"cannot read manifest {uri}: {reason}") from None

    def _entries(self, records: Records, base: str) -> list[ManifestEntry]:
        entries: list[ManifestEntry] = []
        for where, record in records:
            raw = record.get("uri")
            if not isinstance(raw, str) or not raw.strip():
                self.pool.skipped.append(f"{where}: {record.get('_problem', 'no uri')}")
                continue
            try:
                uri = canonical(raw.strip(), base)
            except BadEntryError as error:
                self.pool.skipped.append(f"{where}: {error}")
                continue
            etag = normalize_etag(record.get("etag"))
            entries.append(
                ManifestEntry(
                    uri,
                    etag=etag,
                    size=to_size(record.get("size")),
                    # The key uses the ETag when there is one: skip parsing the time then.
                    mtime_ns=None if etag else to_ns(record.get("last_modified")),
                    problem=record.get("_item_problem"),
                )
            )
        return entries


# --- formats ------------------------------------------------------------------------------


def decode_manifest(data: bytes, uri: str) -> str:
    """UTF-8 text; bytes that are not UTF-8 (a file name in another encoding, as ``find``
    lists it) become surrogate escapes like ``os.fsdecode`` makes, so that entry still names
    its file. NUL bytes mean binary or UTF-16, not a list of names."""
    if b"\0" in data:
        raise PoolError(
            f"manifest {uri} is not UTF-8 text (it holds NUL bytes)",
            hint="save it as UTF-8, one URI per line",
        )
    return data.decode("utf-8-sig", "surrogateescape")


def parse_lines(lines: Iterable[str], name: str) -> Records:
    """One URI a line; blank lines and ``#`` comments skipped."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield f"{name}:{number}", {"uri": text}


def parse_csv(text: str, name: str) -> Records:
    table = CsvTable(io.StringIO(text))
    if table.header is None:
        raise PoolError(f"manifest {name} is empty", hint="add a header row with a 'uri' column")
    columns = table.columns
    if "uri" not in columns:
        raise PoolError(
            f"manifest {name} has no 'uri' column (columns: {', '.join(table.header) or 'none'})",
            hint="add a header row naming the column of URIs 'uri'",
        )
    uri_column = columns.index("uri")
    for row in table.rows():
        where = f"{name}:{table.line}"
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


def parse_jsonl(text: str, name: str) -> Records:
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
