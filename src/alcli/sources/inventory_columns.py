"""S3 Inventory data files read as columns (pyarrow), where pyarrow is installed.

The pure-Python reader in ``s3inventory.py`` spends ~10 µs of CPU per row (the csv module, a
URL decode, an f-string, a blake2b, a sort of ``Item`` tuples): 10-12 s for a million-object
report. This one parses the gzipped CSV with pyarrow's multi-threaded reader, URL-decodes the
key column in numpy (``+`` a space, then ``%xx``, as ``unquote_plus`` does), filters with
``pyarrow.compute`` and sorts there; what stays in Python is one blake2b per kept row. It
gives the same items, in the same order, with the same keys: the ETag form byte for byte
(``keys.remote_key``), and for the few rows the vectorised path cannot key as a plain ETag
(none, quoted, weak, padded) the Python path's own code per row. Where the answer would
depend on anything it cannot reproduce exactly (a key that decodes to invalid UTF-8, an empty
Bucket or Key, a CSV pyarrow refuses, a byte-order mark), it returns None and the caller
reads that file the Python way, which says what is wrong in its own words.

``ALCLI_INVENTORY_READER=python`` turns it off (to compare the two; the benchmark does).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from alcli.sources.keys import normalize_etag, remote_key, to_ns, to_size
from alcli.sources.pool import Item
from alcli.sources.table import ItemTable
from alcli.sources.uris import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    import pyarrow as pa

#: The columns the items are made from (names normalised as ``s3inventory._column_name``).
USED = ("bucket", "key", "etag", "size", "lastmodifieddate", "islatest", "isdeletemarker")
_TAIL = max(map(len, IMAGE_EXTENSIONS))  # how much of a key decides its extension
#: A hex digit's value by byte, -1 for any other byte.
_HEX = np.full(256, -1, dtype=np.int16)
for _digit in b"0123456789abcdefABCDEF":
    _HEX[_digit] = int(chr(_digit), 16)


def enabled() -> bool:
    """True when pyarrow can be imported and ``ALCLI_INVENTORY_READER`` is not ``python``."""
    if os.environ.get("ALCLI_INVENTORY_READER", "").strip().lower() == "python":
        return False
    try:
        import pyarrow.compute
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


class Selected(NamedTuple):
    """One data file's items, in its row order: URIs (large_string) and raw 16-byte keys."""

    uris: pa.Array
    keys: npt.NDArray[np.uint8]

    def items(self) -> list[Item]:
        return [
            Item(uri, key.tobytes().hex())
            for uri, key in zip(self.uris.to_pylist(), self.keys, strict=True)
        ]


def is_true(value: object) -> bool:
    """An ``IsDeleteMarker`` that marks a deleted object (CSV text or Parquet bool)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def is_false(value: object) -> bool:
    """An ``IsLatest`` that marks an old version."""
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def row_key(uri: str, tag: str | None, size: object, mtime: object) -> str:
    """One row's key, the general way (``keys.remote_key``): the ETag bare, else size and
    modification time. Both paths key their odd rows (no ETag, quoted, weak) with it."""
    if tag and ('"' in tag or " " in tag or tag.startswith("W/")):
        tag = normalize_etag(tag)
    if tag:
        return remote_key(uri, tag, None, None)
    return remote_key(uri, None, to_size(size), to_ns(mtime))


def csv_selected(text: bytes, names: list[str], prefix: str) -> Selected | None:
    """The items of a gunzipped CSV data file whose columns are ``names`` (normalised)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if text.startswith(b"\xef\xbb\xbf") or len(set(names)) != len(names):
        return None  # the csv module keeps a BOM in the first field; a name twice: its rules
    used = [name for name in names if name in USED]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(text),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                include_columns=used,
                column_types=dict.fromkeys(used, pa.large_string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    keys = _url_decoded(table.column("key").combine_chunks())
    if keys is None:
        return None
    at = table.schema.get_field_index("key")
    return table_selected(table.set_column(at, "key", keys), prefix)


def table_selected(table: pa.Table, prefix: str) -> Selected | None:
    """The items of a table of (decoded) columns named as ``USED``: filtered, keyed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        return None
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    key, bucket = columns.get("key"), columns.get("bucket")
    if key is None or bucket is None:
        return None
    if "etag" in columns and not _is_text(columns["etag"].type):
        return None
    if not (_is_text(key.type) and _is_text(bucket.type)) or key.null_count or bucket.null_count:
        return None
    key, bucket = key.cast(pa.large_string()), bucket.cast(pa.large_string())
    if len(key) and (
        pc.min(pc.binary_length(key)).as_py() == 0 or pc.min(pc.binary_length(bucket)).as_py() == 0
    ):
        return None  # the Python path names the row
    keep = _by_value(pc.utf8_slice_codeunits(key, start=-_TAIL), _has_image_extension)
    relative = key
    if prefix:
        keep = pc.and_(keep, pc.starts_with(key, pattern=prefix))
        relative = pc.utf8_slice_codeunits(key, start=len(prefix))
    hidden = pc.or_(pc.starts_with(relative, pattern="."), pc.match_substring(relative, "/."))
    keep = pc.and_(keep, pc.invert(hidden))
    if "islatest" in columns:
        keep = pc.and_(keep, pc.invert(_by_value(columns["islatest"], is_false)))
    if "isdeletemarker" in columns:
        keep = pc.and_(keep, pc.invert(_by_value(columns["isdeletemarker"], is_true)))
    rows = pc.indices_nonzero(keep)
    key, bucket = key.take(rows), bucket.take(rows)
    text = [pa.scalar(part, pa.large_string()) for part in ("s3://", "/", "", "etag\0", "\0")]
    s3, slash, nothing, etag_tag, nul = text
    uris = pc.binary_join_element_wise(s3, bucket, slash, key, nothing)
    etag = columns.get("etag")
    if etag is None:
        plain = pa.array(np.zeros(len(rows), dtype=bool))
        tags = pa.nulls(len(rows), pa.large_string())
    else:
        tags = etag.take(rows).cast(pa.large_string())
        odd = pc.or_(
            pc.or_(pc.match_substring(tags, '"'), pc.match_substring(tags, " ")),
            pc.or_(pc.starts_with(tags, pattern="W/"), pc.equal(pc.binary_length(tags), 0)),
        )
        plain = pc.invert(pc.fill_null(odd, True))
    keys = np.empty((len(rows), 16), dtype=np.uint8)
    at = pc.indices_nonzero(plain)
    if len(at):
        payloads = pc.binary_join_element_wise(
            etag_tag, uris.take(at), nul, tags.take(at), nothing
        ).cast(pa.large_binary())
        digests = b"".join([blake2b(p, digest_size=16).digest() for p in payloads.to_pylist()])
        keys[at.to_numpy()] = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16)
    odd_rows = pc.indices_nonzero(pc.invert(plain))
    if len(odd_rows):  # the Python path's own code for each (rare) row
        sizes, mtimes = columns.get("size"), columns.get("lastmodifieddate")
        chosen = rows.take(odd_rows)
        uri_list = uris.take(odd_rows).to_pylist()
        tag_list = tags.take(odd_rows).to_pylist()
        size_list = [None] * len(chosen) if sizes is None else sizes.take(chosen).to_pylist()
        mtime_list = [None] * len(chosen) if mtimes is None else mtimes.take(chosen).to_pylist()
        odd_keys = map(row_key, uri_list, tag_list, size_list, mtime_list)
        keys[odd_rows.to_numpy()] = np.frombuffer(
            bytes.fromhex("".join(odd_keys)), dtype=np.uint8
        ).reshape(-1, 16)
    return Selected(uris, keys)


def item_table(parts: Sequence[Selected]) -> ItemTable:
    """The data files' items as one table sorted by URI (a stable sort: rows with the same URI
    keep their files' order, as ``list.sort`` keeps them on the Python path)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    uris = pa.concat_arrays([part.uris for part in parts])
    keys = np.concatenate([part.keys for part in parts])
    order = pc.sort_indices(uris)
    uris = uris.take(order)
    keys = keys[order.to_numpy()]
    n = len(uris)
    distinct = n < 2 or not pc.any(pc.equal(uris.slice(1), uris.slice(0, n - 1))).as_py()
    data, offsets = _utf8_and_offsets(uris)
    return ItemTable(data, offsets, keys, None, distinct=distinct)


# --- pieces -------------------------------------------------------------------------------


def _utf8_and_offsets(
    strings: pa.Array,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """A large_string array's bytes and its n + 1 offsets into them (from 0), without a copy."""
    n = len(strings)
    buffers = strings.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[strings.offset : strings.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(buffers[2], dtype=np.uint8) if end > start else np.empty(0, np.uint8)
    return data[start:end], offsets - start


def _is_text(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _has_image_extension(tail: object) -> bool:
    return isinstance(tail, str) and tail.lower().endswith(IMAGE_EXTENSIONS)


def _by_value(column: pa.Array, rule: Callable[[Any], bool]) -> pa.Array:
    """``rule`` of every value, asked once per distinct value (a column of a million rows has
    a few hundred distinct extensions' tails, two IsLatest values): the Python rule exactly."""
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct = pc.unique(column)
    hits = [value for value in distinct.to_pylist() if rule(value)]
    if not hits:
        return pa.array(np.zeros(len(column), dtype=bool))
    return pc.fill_null(pc.is_in(column, value_set=pa.array(hits, type=column.type)), False)


def _url_decoded(keys: pa.Array) -> pa.Array | None:
    """``unquote_plus(key, errors="surrogateescape")`` of every key, in numpy on the column's
    bytes: ``+`` becomes a space, then each ``%`` followed by two hex digits in the same key
    becomes that byte (an escape's digits are never ``%``, so escapes cannot overlap). None
    when a decoded key is not valid UTF-8 (the Python path gives it surrogate escapes)."""
    import pyarrow as pa

    if keys.null_count:
        return None
    keys = keys.cast(pa.large_string())
    n = len(keys)
    data, offsets = _utf8_and_offsets(keys)
    percent = np.flatnonzero(data == 0x25)
    plus = data == 0x2B
    if not len(percent) and not plus.any():
        return keys
    data = data.copy()
    data[plus] = 0x20
    if len(percent):
        row_end = offsets[np.searchsorted(offsets, percent, side="right")] if n else percent
        percent = percent[percent + 2 < row_end]
        high, low = _HEX[data[percent + 1]], _HEX[data[percent + 2]]
        valid = (high >= 0) & (low >= 0)
        percent, high, low = percent[valid], high[valid], low[valid]
        data[percent] = (high * 16 + low).astype(np.uint8)
        offsets = offsets - 2 * np.searchsorted(percent, offsets, side="left")
        data = np.delete(data, np.concatenate([percent + 1, percent + 2]))
    decoded = pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        return decoded.cast(pa.large_string())
    except pa.ArrowInvalid:
        return None
