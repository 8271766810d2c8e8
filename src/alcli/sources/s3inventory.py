"""S3 Inventory reports as a POOL: ``manifest.json`` (or the Hive ``symlink.txt``), local or remote.

How teams with millions of objects list them (a daily report, no LIST calls). The manifest
names the report's ``fileFormat``, its ``fileSchema`` (CSV column names) and its data
``files`` (``key``, ``size``, ``MD5checksum``); every data file's MD5 is checked before its
rows are used. CSV data files are gzipped, headerless, every field quoted, keys URL-encoded
(``+`` a space, ``%xx``); Parquet needs pyarrow (``pip install 'alcli[parquet]'``); ORC is
refused. Rows that are delete markers or not the latest version are skipped when the report
has those columns; only image names are kept (as when listing a folder), hidden names
skipped, and ``prefix`` keeps the keys under it. Items come sorted by URI with exactly the keys
a listing of the same objects gives (``keys.remote_key``: ETag, else size + modification
time), so a pool embedded from a listing is warm when read from its inventory and back.
Where pyarrow is installed, data files are read as columns (``inventory_columns.py``: the
same items and keys for a fraction of the CPU); this module's row-by-row code is the reference
and the fallback.

Data files are found next to the manifest the way S3 writes them: remote, at the manifest's
bucket + ``key``; a local copy, in the manifest's folder, its ``data/`` or ``../data/``.
With a memo folder, the items are remembered under the digest of the manifest's bytes (which
hold every data file's MD5) and the prefix: the next resolution reads no data file at all.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b
from typing import Any
from urllib.parse import unquote_plus

from alcli.errors import ItemError, PoolError, one_line
from alcli.sources import inventory_columns
from alcli.sources.etag_manifests import MEMO_SUFFIX, read_memo, write_memo
from alcli.sources.pool import Item
from alcli.sources.uris import IMAGE_EXTENSIONS, split_uri

REPORT_NAMES = ("manifest.json", "symlink.txt")
_MEMO_TAG = b"alcli-s3-inventory-v1"
#: Reports whose data files total less than this (bytes) are not memoised.
MEMO_MIN_DATA_BYTES = 256 << 10
#: CSV reports whose data files total less than this are read row by row: importing pyarrow
#: (~0.1-0.3 s) costs more than the Python reader spends on ~15,000 rows.
COLUMNS_MIN_DATA_BYTES = 256 << 10


def is_report(spec: str) -> bool:
    """True for a spec naming an inventory report's ``manifest.json`` or ``symlink.txt``."""
    return posixpath.basename(spec.rstrip("/")).lower() in REPORT_NAMES


class InventoryReader:
    """One report into items. ``fetch(uri) -> bytes`` reads any URI (local or remote)."""

    def __init__(
        self,
        fetch: Callable[[str], bytes],
        *,
        prefix: str | None = None,
        memo_dir: str | None = None,
    ) -> None:
        self.fetch = fetch
        self.prefix = prefix or ""
        self.memo_dir = memo_dir

    def items(self, spec: str) -> Sequence[Item]:
        if posixpath.basename(spec).lower() == "symlink.txt":
            manifest_uri, wanted = self._from_symlink(spec)
        else:
            manifest_uri, wanted = spec, None
        raw = self._read(manifest_uri, "inventory manifest")
        manifest = parse_manifest(raw, manifest_uri)
        files = manifest["files"]
        if wanted is not None:
            files = [f for f in files if posixpath.basename(f["key"]) in wanted]
        memo = self._memo_path(raw, wanted)
        if memo and sum(f["size"] for f in files) >= MEMO_MIN_DATA_BYTES:
            remembered = read_memo(memo)
            if remembered is not None:
                return remembered
        else:
            memo = None
        large = sum(f["size"] for f in files) >= COLUMNS_MIN_DATA_BYTES
        fast = inventory_columns.enabled() and (
            large or manifest["fileFormat"].upper() == "PARQUET"
        )
        parts: list[inventory_columns.Selected | list[Item]] = []
        for entry in files:
            uri = data_file_uri(manifest_uri, entry["key"])
            data = self._read(uri, "inventory data file")
            check_md5(data, entry, uri)
            parts.append(self._rows(data, manifest, uri, fast=fast))
        tables = [part for part in parts if isinstance(part, inventory_columns.Selected)]
        counts = (
            len(part.keys) if isinstance(part, inventory_columns.Selected) else len(part)
            for part in parts
        )
        if not any(counts):
            under = f" under prefix {self.prefix!r}" if self.prefix else ""
            raise PoolError(
                f"inventory {spec} lists no image{under}",
                hint="check --prefix and that the report covers the objects",
            )
        rows: Sequence[Item]
        if len(tables) == len(parts):
            rows = inventory_columns.item_table(tables)
        else:  # some file took the Python path: all of them as Items, sorted the same way
            listed = [
                item
                for part in parts
                for item in (part.items() if isinstance(part, inventory_columns.Selected) else part)
            ]
            listed.sort(key=lambda item: item.uri)
            rows = listed
        if memo:
            write_memo(memo, rows)
        return rows

    # --- pieces --------------------------------------------------------------------------

    def _rows(
        self, data: bytes, manifest: Mapping[str, Any], uri: str, *, fast: bool
    ) -> inventory_columns.Selected | list[Item]:
        """One data file's items, as columns (pyarrow) where ``fast`` and the columnar reader
        can give exactly the Python path's answer, else as ``Item`` s the Python way."""
        form = manifest["fileFormat"].upper()
        if form == "CSV":
            names = [_column_name(name) for name in manifest["fileSchema"].split(",")]
            if "key" not in names or "bucket" not in names:
                raise PoolError(f"inventory fileSchema has no Bucket and Key columns ({uri})")
            if fast:
                selected = inventory_columns.csv_selected(_gunzipped(data, uri), names, self.prefix)
                if selected is not None:
                    return selected
            return self._select(csv_columns(data, names, uri), uri)
        if form == "PARQUET":
            table = parquet_table(data, uri)
            if fast:
                selected = inventory_columns.table_selected(table, self.prefix)
                if selected is not None:
                    return selected
            return self._select(
                {name: table.column(name).to_pylist() for name in table.column_names}, uri
            )
        raise PoolError(
            f"inventory format {manifest['fileFormat']} is not supported ({uri})",
            hint="configure the inventory as CSV or Parquet",
        )

    def _select(self, found: Mapping[str, Sequence[Any]], where: str) -> list[Item]:
        """The rows that are items, keyed; one pass of plain string tests per row (a million
        rows are a few seconds of Python: no call per field where a test does)."""
        keys, buckets = found.get("key"), found.get("bucket")
        if keys is None or buckets is None:
            raise PoolError(f"inventory data file {where} has no Bucket and Key columns")
        etags = found.get("etag") or [None] * len(keys)
        sizes = found.get("size") or [None] * len(keys)
        mtimes = found.get("lastmodifieddate") or [None] * len(keys)
        latest = found.get("islatest")
        deleted = found.get("isdeletemarker")
        prefix, start = self.prefix, len(self.prefix)
        items: list[Item] = []
        for row, key in enumerate(keys):
            bucket = buckets[row]
            if not key or not bucket:
                raise PoolError(f"inventory data file {where} has a row without Bucket or Key")
            if not key.startswith(prefix) or not key.lower().endswith(IMAGE_EXTENSIONS):
                continue
            relative = key[start:]
            if relative.startswith(".") or "/." in relative:  # a hidden name, as listing skips
                continue
            if (latest is not None and inventory_columns.is_false(latest[row])) or (
                deleted is not None and inventory_columns.is_true(deleted[row])
            ):
                continue
            uri = f"s3://{bucket}/{key}"
            tag = etags[row]
            if tag and not ('"' in tag or " " in tag or tag.startswith("W/")):
                # remote_key's ETag form, byte for byte, without its call per field
                payload = f"{uri}\0{tag}".encode("utf-8", "surrogateescape")  # text_bytes
                digest = blake2b(b"etag\0" + payload, digest_size=16)
                items.append(Item(uri, digest.hexdigest()))
            else:  # no ETag, or a quoted, weak or padded one: the general way
                items.append(
                    Item(uri, inventory_columns.row_key(uri, tag, sizes[row], mtimes[row]))
                )
        return items

    def _from_symlink(self, spec: str) -> tuple[str, set[str]]:
        """The manifest beside a Hive ``symlink.txt`` (for the columns and the MD5s), and the
        data files the symlink names. S3 writes ``.../hive/dt=YYYY-MM-DD-HH-MM/symlink.txt``
        for the report ``.../YYYY-MM-DDTHH-MMZ/manifest.json``."""
        text = self._read(spec, "inventory symlink").decode("utf-8", "replace")
        wanted = {posixpath.basename(line.strip()) for line in text.splitlines() if line.strip()}
        folder = posixpath.dirname(spec)
        stamp = posixpath.basename(folder).removeprefix("dt=")
        parts = stamp.split("-")
        if len(parts) != 5 or not wanted:
            raise PoolError(
                f"{spec} is not an S3 Inventory symlink.txt (in a dt=YYYY-MM-DD-HH-MM folder)",
                hint="give the report's manifest.json instead",
            )
        name = f"{'-'.join(parts[:3])}T{'-'.join(parts[3:])}Z"
        config = posixpath.dirname(posixpath.dirname(posixpath.dirname(spec)))
        candidates = [f"{config}/{name}/manifest.json", f"{folder}/manifest.json"]
        for candidate in candidates:
            if self._exists(candidate):
                return candidate, wanted
        raise PoolError(
            f"no manifest.json found for {spec} (looked for {candidates[0]})",
            hint="the manifest names the columns and checksums: give it as POOL",
        )

    def _read(self, uri: str, what: str) -> bytes:
        try:
            return self.fetch(uri)
        except (FileNotFoundError, ItemError, OSError) as error:
            reason = error.reason if isinstance(error, ItemError) else one_line(error)
            raise PoolError(f"cannot read {what} {uri}: {reason}") from None

    def _exists(self, uri: str) -> bool:
        try:
            self.fetch(uri)
        except (FileNotFoundError, ItemError, OSError):
            return False
        return True

    def _memo_path(self, raw: bytes, wanted: set[str] | None) -> str | None:
        if self.memo_dir is None:
            return None
        digest = hashlib.blake2b(_MEMO_TAG, digest_size=20)
        for part in (raw, self.prefix.encode("utf-8", "surrogateescape")):
            digest.update(b"\0")
            digest.update(part)
        digest.update(repr(sorted(wanted or ())).encode())
        return os.path.join(self.memo_dir, f"{digest.hexdigest()}{MEMO_SUFFIX}")


def parse_manifest(raw: bytes, uri: str) -> dict[str, Any]:
    """The manifest's fields this reader uses, checked; a ``PoolError`` naming what is wrong."""

    def bad(detail: str) -> PoolError:
        return PoolError(
            f"malformed S3 Inventory manifest {uri}: {detail}",
            hint="give the manifest.json S3 wrote for the report",
        )

    try:
        manifest = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad(f"not JSON ({one_line(error)})") from None
    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    form = manifest.get("fileFormat")
    if not isinstance(form, str):
        raise bad("no fileFormat")
    if form.upper() == "ORC":
        raise PoolError(
            f"S3 Inventory reports in ORC are not supported ({uri})",
            hint="configure the inventory as CSV or Parquet",
        )
    if form.upper() == "CSV" and not isinstance(manifest.get("fileSchema"), str):
        raise bad("no fileSchema (the CSV columns)")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise bad("no files")
    checked = []
    for number, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise bad(f"files[{number}] is not an object")
        key, md5, size = entry.get("key"), entry.get("MD5checksum"), entry.get("size", 0)
        if not isinstance(key, str) or not key:
            raise bad(f"files[{number}] has no key")
        if not isinstance(md5, str) or len(md5) != 32:
            raise bad(f"files[{number}] has no MD5checksum")
        if not isinstance(size, int):
            raise bad(f"files[{number}] has no size")
        checked.append({"key": key, "MD5checksum": md5.lower(), "size": size})
    return {**manifest, "files": checked}


def data_file_uri(manifest_uri: str, key: str) -> str:
    """Where a data file named ``key`` in the manifest is (see the module docstring)."""
    protocol, path = split_uri(manifest_uri)
    if protocol is not None:
        bucket = path.split("/", 1)[0]
        return f"{protocol}://{bucket}/{key}"
    folder = os.path.dirname(os.path.abspath(path))
    name = posixpath.basename(key)
    candidates = [
        os.path.join(folder, name),
        os.path.join(folder, "data", name),
        os.path.join(os.path.dirname(folder), "data", name),
    ]
    return next((c for c in candidates if os.path.isfile(c)), candidates[-1])


def check_md5(data: bytes, entry: Mapping[str, Any], uri: str) -> None:
    found = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if found != entry["MD5checksum"]:
        raise PoolError(
            f"inventory data file {uri} does not match its manifest "
            f"(MD5 {found}, manifest says {entry['MD5checksum']})",
            hint="the copy is damaged or from another report: fetch it again",
        )


def _column_name(name: str) -> str:
    """``LastModifiedDate`` (CSV schema) and ``last_modified_date`` (Parquet) alike."""
    return name.replace("_", "").replace(" ", "").lower()


def _gunzipped(data: bytes, uri: str) -> bytes:
    try:
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError) as error:
        detail = one_line(error)
        raise PoolError(f"inventory data file {uri} is not gzipped CSV: {detail}") from None


def csv_columns(data: bytes, names: list[str], uri: str) -> dict[str, Sequence[Any]]:
    """A gzipped, headerless CSV data file as columns by (normalised) name; keys decoded.
    The Python path: ``inventory_inventory_columns.csv_selected`` gives the same items faster."""
    try:
        text = _gunzipped(data, uri).decode("utf-8")
    except UnicodeDecodeError as error:
        detail = one_line(error)
        raise PoolError(f"inventory data file {uri} is not gzipped CSV: {detail}") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    widths = set(map(len, rows))
    if widths - {len(names)}:
        number = next(n for n, row in enumerate(rows, 1) if len(row) != len(names))
        raise PoolError(
            f"inventory data file {uri}: row {number} has {len(rows[number - 1])} fields, "
            f"the manifest's fileSchema {len(names)}"
        )
    if not rows:
        return {name: [] for name in names}
    found: dict[str, Sequence[Any]] = dict(zip(names, zip(*rows, strict=True), strict=True))
    found["key"] = [
        unquote_plus(key, errors="surrogateescape") if "%" in key or "+" in key else key
        for key in found["key"]
    ]
    return found


def parquet_table(data: bytes, uri: str) -> Any:
    """A Parquet data file as a pyarrow table, its column names normalised."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PoolError(
            f"reading a Parquet inventory ({uri}) needs pyarrow",
            hint="pip install 'alcli[parquet]', or configure the inventory as CSV",
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as error:
        raise PoolError(f"inventory data file {uri} is not Parquet: {one_line(error)}") from None
    return table.rename_columns([_column_name(name) for name in table.column_names])
