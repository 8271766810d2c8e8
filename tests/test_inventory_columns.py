"""The columnar (pyarrow) inventory reader against the Python one, on local reports in S3's
format with every awkward case: URL encodings of every kind, malformed escapes, unicode,
quoted / weak / missing ETags, versions, duplicates, keys that decode to invalid UTF-8 (that
file falls back to the Python path) and no pyarrow at all."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from alcli.errors import PoolError
from alcli.sources import inventory_columns as columns
from alcli.sources import resolve_pool
from alcli.sources import s3inventory as inventory
from alcli.sources.table import ItemTable

pa = pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def columns_for_small_reports(monkeypatch) -> None:
    """These reports are small: read them as columns too (``COLUMNS_MIN_DATA_BYTES``)."""
    monkeypatch.setattr(inventory, "COLUMNS_MIN_DATA_BYTES", 0)


SCHEMA = ["Bucket", "Key", "Size", "LastModifiedDate", "ETag", "IsLatest", "IsDeleteMarker"]
PIECES = [*'ab/ +%.,"é_-~0Z', "😀", "%4", "%zz", "%2F", "/.", "Σ", "\u212a", "İ"]
EXTENSIONS = [".png", ".PNG", ".jpeg", ".txt", ".Jpg", ".tİff", ".tiff", ""]


def random_rows(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    encoders = [
        lambda key: quote_plus(key, safe="/"),
        quote_plus,
        quote,  # %20 for a space
        lambda key: key.replace(" ", "+") if "%" not in key and "+" not in key else quote(key),
    ]
    rows = []
    for number in range(count):
        key = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
        key += rng.choice(EXTENSIONS)
        tag = rng.choice([f"{number:032x}"] * 6 + [f'"{number:x}"', "", f"W/{number:x}", " a"])
        rows.append(
            [
                "src" if number % 40 else "src-2",
                rng.choice(encoders)(key),
                str(number),
                rng.choice(["2026-11-20T00:00:00.000Z", "", "junk"]),
                tag,
                rng.choice(["true", "true", "false", " FALSE", ""]),
                rng.choice(["false", "false", "true", ""]),
            ]
        )
    return rows


def write_local_report(folder: Path, parts: list[list[list[str]]]) -> str:
    entries = []
    for number, rows in enumerate(parts):
        text = io.StringIO()
        csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
        blob = gzip.compress(text.getvalue().encode())
        (folder / f"part-{number}.csv.gz").write_bytes(blob)
        md5 = hashlib.md5(blob).hexdigest()
        entries.append(
            {"key": f"inv/data/part-{number}.csv.gz", "size": len(blob), "MD5checksum": md5}
        )
    manifest = {"fileFormat": "CSV", "fileSchema": ", ".join(SCHEMA), "files": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder / "manifest.json")


def resolved(spec: str, monkeypatch, reader: str, **kwargs):
    monkeypatch.setenv("ALCLI_INVENTORY_READER", reader)
    return resolve_pool(spec, **kwargs)


def test_url_decoding_in_numpy_is_unquote_plus() -> None:
    rows = random_rows(3000, seed=1)
    keys = [row[1] for row in rows] + [
        "%",
        "%4",
        "a%4",
        "%41%",
        "%%41",
        "%4%41",
        "+%2B+",
        "",
        "%e9",
    ]
    decoded = columns._url_decoded(pa.array(keys[:-1], type=pa.large_string()))
    assert decoded is not None
    assert decoded.to_pylist() == [unquote_plus(key) for key in keys[:-1]]
    assert columns._url_decoded(pa.array(keys, type=pa.large_string())) is None  # "%e9": not UTF-8
    sliced = pa.array(keys[:-1], type=pa.string()).slice(5, 100)  # an offset into its buffers
    assert columns._url_decoded(sliced).to_pylist() == [unquote_plus(k) for k in keys[5:105]]


@pytest.mark.parametrize("prefix", [None, "a", "é", "%", "😀"])
def test_both_readers_give_the_same_items_keys_order_and_duplicates(
    tmp_path: Path, monkeypatch, prefix
) -> None:
    rows = random_rows(4000, seed=2)
    rows += [rows[11], rows[12]]  # the same objects twice: reported once, first row kept
    spec = write_local_report(tmp_path, [rows[0::2], rows[1::2]])
    fast = resolved(spec, monkeypatch, "", inventory_prefix=prefix)
    slow = resolved(spec, monkeypatch, "python", inventory_prefix=prefix)
    assert list(fast.items) == list(slow.items)
    assert fast.duplicates == slow.duplicates
    assert len(slow.items) > 5


def test_a_table_when_no_file_falls_back(tmp_path: Path, monkeypatch) -> None:
    rows = [r for r in random_rows(2000, seed=3) if r[5] != " FALSE"]
    unique = {unquote_plus(r[1]): r for r in rows}  # one row per object: a distinct pool
    spec = write_local_report(tmp_path, [list(unique.values())])
    fast = resolved(spec, monkeypatch, "", memo_dir=tmp_path / "memo").items
    slow = resolved(spec, monkeypatch, "python").items
    assert isinstance(fast, ItemTable)
    assert isinstance(slow, list)
    assert fast == slow
    assert len(fast) > 100


def test_a_key_that_decodes_to_invalid_utf8_reads_that_file_the_python_way(
    tmp_path: Path, monkeypatch
) -> None:
    good = random_rows(500, seed=4)
    bad = [*random_rows(500, seed=5), ["src", "odd%C3+name.png", "1", "", "e" * 32, "", ""]]
    spec = write_local_report(tmp_path, [good, bad])
    fast = resolved(spec, monkeypatch, "").items
    slow = resolved(spec, monkeypatch, "python").items
    assert list(fast) == list(slow)
    assert "s3://src/odd\udcc3 name.png" in {item.uri for item in fast}


def test_small_csv_reports_are_read_row_by_row(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(inventory, "COLUMNS_MIN_DATA_BYTES", 256 << 10)
    monkeypatch.delenv("ALCLI_INVENTORY_READER", raising=False)
    rows = {unquote_plus(r[1]): r for r in random_rows(300, seed=7) if r[5] != " FALSE"}
    spec = write_local_report(tmp_path, [list(rows.values())])
    assert isinstance(resolve_pool(spec).items, list)  # pyarrow's import would cost more
    monkeypatch.setattr(inventory, "COLUMNS_MIN_DATA_BYTES", 0)
    assert isinstance(resolve_pool(spec).items, ItemTable)


def test_without_pyarrow_the_python_reader_answers(tmp_path: Path, monkeypatch) -> None:
    spec = write_local_report(tmp_path, [random_rows(300, seed=6)])
    monkeypatch.delenv("ALCLI_INVENTORY_READER", raising=False)
    with_arrow = resolve_pool(spec).items
    monkeypatch.setitem(sys.modules, "pyarrow.csv", None)  # as if not installed
    assert not columns.enabled()
    assert list(resolve_pool(spec).items) == list(with_arrow)


def test_only_the_tail_of_a_key_decides_its_extension() -> None:
    """``key.lower().endswith(ext)`` is asked of the key's last 5 characters: lower-casing
    never merges characters, so no longer tail can change the answer."""
    longest = max(map(len, columns.IMAGE_EXTENSIONS))
    assert longest == columns._TAIL
    for key in ["a.PNG", "x\u212a.png", "İ.jpg", "a.tİff", "b.Tiff", "c.pnG ", "Σ.JPEG"]:
        assert columns._has_image_extension(key[-longest:]) == key.lower().endswith(
            columns.IMAGE_EXTENSIONS
        )


@pytest.mark.parametrize("reader", ["", "python"])
def test_a_prefix_with_no_image_under_it_is_one_error(tmp_path: Path, monkeypatch, reader) -> None:
    spec = write_local_report(tmp_path, [random_rows(200, seed=8)])
    with pytest.raises(PoolError, match=r"lists no image under prefix 'zzz/'"):
        resolved(spec, monkeypatch, reader, inventory_prefix="zzz/")
