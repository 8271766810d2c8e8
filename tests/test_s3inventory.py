"""S3 Inventory reports as a POOL, against a real moto bucket and a report in S3's own format
(``inventory_report.py``): the same items and keys as a listing, from the remote manifest, a
local copy and the Hive symlink; filters; damaged reports as one-line errors (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from alcli.cli import app
from alcli.sources import resolve_pool
from alcli.sources import s3inventory as inventory
from alcli.sources.table import ItemTable
from inventory_report import write_report

pytestmark = pytest.mark.s3

#: Names a real bucket holds: spaces, a literal '+', unicode, nested prefixes, a non-image,
#: a hidden file and a folder marker (the last three are never items).
KEYS = [
    "imgs/a b.png",
    "imgs/c+d.png",
    "imgs/ünï/é 1.jpg",
    "imgs/deep/er/x%41.png",
    "imgs/deep/y.jpeg",
    "imgs/100% sure,really.png",
    "imgs/notes.txt",
    "imgs/.hidden.png",
    "imgs/folder/",
    "top.png",
]


@pytest.fixture
def inventoried(s3_bucket: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A source bucket holding KEYS (real PNG bytes are not needed to resolve) and an empty
    destination bucket for reports."""
    import boto3

    source, options = s3_bucket
    endpoint = options["client_kwargs"]["endpoint_url"]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for number, key in enumerate(KEYS):
        client.put_object(
            Bucket=source, Key=key, Body=b"" if key.endswith("/") else bytes([number]) * 40
        )
    destination = f"{source}-inv"
    client.create_bucket(Bucket=destination)
    return {"client": client, "source": source, "destination": destination, "options": options}


def endpoint(setup: dict[str, Any]) -> str:
    return setup["options"]["client_kwargs"]["endpoint_url"]


def listing(spec: str, options: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(item) for item in resolve_pool(spec, storage_options=options).items]


@pytest.fixture(params=["columns", "python"])
def reader(request, monkeypatch) -> str:
    """Each test that takes it runs with the columnar (pyarrow) reader and the Python one."""
    if request.param == "columns":
        pytest.importorskip("pyarrow")
        monkeypatch.delenv("ALCLI_INVENTORY_READER", raising=False)
        monkeypatch.setattr(inventory, "COLUMNS_MIN_DATA_BYTES", 0)  # these reports are small
    else:
        monkeypatch.setenv("ALCLI_INVENTORY_READER", "python")
    return request.param


def both_readers(spec: str, monkeypatch, **kwargs: Any) -> list[tuple[str, str]]:
    """The items from the columnar reader (checked to be the one that answered: a table)
    and from the Python reader, which must be equal; returned as tuples."""
    pytest.importorskip("pyarrow")
    monkeypatch.delenv("ALCLI_INVENTORY_READER", raising=False)
    monkeypatch.setattr(inventory, "COLUMNS_MIN_DATA_BYTES", 0)  # these reports are small
    fast = resolve_pool(spec, **kwargs).items
    monkeypatch.setenv("ALCLI_INVENTORY_READER", "python")
    slow = resolve_pool(spec, **kwargs).items
    monkeypatch.delenv("ALCLI_INVENTORY_READER")
    assert isinstance(fast, ItemTable), "the columnar reader fell back to the Python path"
    assert isinstance(slow, list)
    assert [tuple(item) for item in fast] == [tuple(item) for item in slow]
    return [tuple(item) for item in fast]


def test_a_report_resolves_to_exactly_what_a_listing_gives(
    inventoried, reader, tmp_path: Path
) -> None:
    s = inventoried
    report = write_report(s["client"], s["source"], s["destination"], local=tmp_path / "copy")
    expected = listing(f"s3://{s['source']}/", s["options"])
    assert len(expected) == 7  # every image, not the .txt, the hidden file or the marker
    assert (f"s3://{s['source']}/imgs/c+d.png") in dict(expected)
    for spec in (report.manifest_uri, report.symlink_uri, str(report.local_manifest)):
        assert listing(spec, s["options"]) == expected, spec


def stale_row(bucket: str) -> dict[str, str]:
    """An inventory row of an old object version: the extra rows' common fields."""
    return {
        "Bucket": bucket, "Size": "40", "LastModifiedDate": "2026-01-01T00:00:00.000Z",
        "ETag": "0" * 32, "StorageClass": "STANDARD", "VersionId": "v0",
    }  # fmt: skip


def test_the_columnar_and_python_readers_give_the_same_items_and_keys(
    inventoried, tmp_path: Path, monkeypatch
) -> None:
    """Spaces, '+', '%', commas, unicode, nested prefixes, both URL encodings (the generator
    encodes '/' in one data file and not in the other), versions and delete markers."""
    s = inventoried
    stale = stale_row(s["source"])
    extra = [
        {**stale, "Key": "imgs/old é.png", "IsLatest": "false", "IsDeleteMarker": "false"},
        {**stale, "Key": "imgs/gone.png", "IsLatest": "true", "IsDeleteMarker": "true"},
        {**stale, "Key": "imgs/quoted+w.png", "ETag": 'W/"ab"', "IsLatest": "true",
         "IsDeleteMarker": "false"},
        {**stale, "Key": "imgs/no tag.png", "ETag": "", "IsLatest": "TRUE",
         "IsDeleteMarker": " False"},
    ]  # fmt: skip
    report = write_report(
        s["client"], s["source"], s["destination"], versioned=True, extra_rows=extra,
        local=tmp_path / "copy",
    )  # fmt: skip
    options = {"storage_options": s["options"]}
    found = both_readers(report.manifest_uri, monkeypatch, **options)
    assert both_readers(str(report.local_manifest), monkeypatch, **options) == found
    uris = [uri.removeprefix(f"s3://{s['source']}/") for uri, _ in found]
    assert uris == sorted([*KEYS[:6], "top.png", "imgs/quoted+w.png", "imgs/no tag.png"])
    for prefix in ("imgs/", "imgs/deep", "imgs/ünï/"):
        under = both_readers(report.manifest_uri, monkeypatch, inventory_prefix=prefix, **options)
        assert under == [
            item for item in found if item[0].startswith(f"s3://{s['source']}/{prefix}")
        ]


def test_prefix_keeps_the_keys_under_it_like_listing_that_prefix(inventoried) -> None:
    s = inventoried
    report = write_report(s["client"], s["source"], s["destination"])
    expected = listing(f"s3://{s['source']}/imgs/deep/", s["options"])
    found = resolve_pool(
        report.manifest_uri, storage_options=s["options"], inventory_prefix="imgs/deep/"
    )
    assert [tuple(item) for item in found.items] == expected
    assert len(expected) == 2


def test_old_versions_and_delete_markers_are_skipped(inventoried) -> None:
    s = inventoried
    stale = stale_row(s["source"])
    extra = [
        {**stale, "Key": "imgs/a b.png", "IsLatest": "false", "IsDeleteMarker": "false"},
        {**stale, "Key": "imgs/gone.png", "IsLatest": "true", "IsDeleteMarker": "true"},
    ]
    report = write_report(
        s["client"], s["source"], s["destination"], versioned=True, extra_rows=extra
    )
    assert listing(report.manifest_uri, s["options"]) == listing(
        f"s3://{s['source']}/", s["options"]
    )


def test_parquet_reports_read_through_pyarrow_and_say_so_without_it(
    inventoried, monkeypatch
) -> None:
    pytest.importorskip("pyarrow")
    s = inventoried
    report = write_report(s["client"], s["source"], s["destination"], fmt="Parquet")
    expected = listing(f"s3://{s['source']}/", s["options"])
    assert both_readers(report.manifest_uri, monkeypatch, storage_options=s["options"]) == expected
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    with pytest.raises(inventory.PoolError, match=r"needs pyarrow") as error:
        resolve_pool(report.manifest_uri, storage_options=s["options"])
    assert "alcli[parquet]" in (error.value.hint or "")


def test_a_large_report_is_remembered_and_then_reads_no_data_file(
    inventoried, s3_traffic, tmp_path: Path, monkeypatch
) -> None:
    s = inventoried
    report = write_report(s["client"], s["source"], s["destination"])
    monkeypatch.setattr(inventory, "MEMO_MIN_DATA_BYTES", 0)
    memo = tmp_path / "memo"
    first = resolve_pool(report.manifest_uri, storage_options=s["options"], memo_dir=memo)
    s3_traffic.reset()
    again = resolve_pool(report.manifest_uri, storage_options=s["options"], memo_dir=memo)
    assert again.items == first.items
    data_gets = [r for r in s3_traffic.requests if r.kind == "get" and "/data/" in r.path]
    assert data_gets == []  # the manifest's bytes (with every data file's MD5) decided it
    assert len(list(memo.glob("*.table"))) == 1


def cli_error(runner, spec: str, endpoint: str) -> str:
    """The first stderr line of a refused ``alcli embed spec`` (exit 2, no traceback)."""
    result = runner.invoke(app, ["embed", spec, "--endpoint-url", endpoint])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("alcli: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_wrong_checksum_is_a_one_line_error(inventoried, reader, runner) -> None:
    s = inventoried
    report = write_report(s["client"], s["source"], s["destination"], corrupt_md5=True)
    line = cli_error(runner, report.manifest_uri, endpoint(s))
    assert "does not match its manifest" in line
    assert report.data_keys[-1] in line


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b'{"fileFormat": "CSV", "fileSchema": "Bucket, Key", "files": []}', "no files"),
        (b'{"fileFormat": "CSV", "files": [{"key": "k", "size": 1}]}', "no fileSchema"),
        (
            b'{"fileFormat": "CSV", "fileSchema": "Bucket, Key", "files": [{"key": "k"}]}',
            "no MD5checksum",
        ),
        (b'{"fileFormat": "ORC", "files": []}', "ORC are not supported"),
    ],
)
def test_a_malformed_manifest_is_a_one_line_error(inventoried, reader, runner, body, says) -> None:
    s = inventoried
    key = "inventory/src/daily/2026-11-20T01-00Z/manifest.json"
    s["client"].put_object(Bucket=s["destination"], Key=key, Body=body)
    assert says in cli_error(runner, f"s3://{s['destination']}/{key}", endpoint(s))


def test_prefix_with_anything_but_a_report_is_refused(runner, tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    result = runner.invoke(app, ["embed", str(tmp_path / "pool"), "--prefix", "a/"])
    assert result.exit_code == 2
    assert "--prefix applies to an S3 Inventory report" in result.stderr


@pytest.mark.slow
def test_a_pool_embedded_from_its_listing_is_warm_from_its_inventory(
    s3_bucket, png_pool, runner
) -> None:
    """The end to end promise: same keys, so the report's run embeds nothing new."""
    import json

    import boto3

    source, options = s3_bucket
    url = options["client_kwargs"]["endpoint_url"]
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    for path in png_pool(6):
        client.put_object(Bucket=source, Key=f"imgs/a b/{path.name}", Body=path.read_bytes())
    client.create_bucket(Bucket=f"{source}-inv")
    report = write_report(client, source, f"{source}-inv")
    tiny = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]

    def embed(spec: str) -> dict[str, Any]:
        result = runner.invoke(app, ["embed", spec, *tiny, "--endpoint-url", url, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    listed = embed(f"s3://{source}/imgs/")
    assert (listed["embedded"], listed["cached"]) == (6, 0)
    again = embed(report.manifest_uri)
    assert (again["items"], again["embedded"], again["cached"]) == (6, 0, 6)
