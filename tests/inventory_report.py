"""Writes an S3 Inventory report in S3's own format for objects in a (moto) bucket.

What S3 writes for a daily inventory of ``source`` into ``destination``:

    <prefix>/<source>/<config>/2026-11-20T01-00Z/manifest.json   (fileFormat, fileSchema, files)
    <prefix>/<source>/<config>/data/<uuid>.csv.gz                 (headerless, quoted, gzipped)
    <prefix>/<source>/<config>/hive/dt=2026-11-20-01-00/symlink.txt

Keys in CSV data files are URL-encoded (``+`` for a space). Rows come from a real listing
(ETag, size, LastModified as the store gives them), split over ``files`` data files.
``versioned=True`` adds VersionId/IsLatest/IsDeleteMarker columns and, per ``extra_rows``,
rows S3 lists for old versions and delete markers (which a reader must skip).
``write_report(..., local=folder)`` also writes the same files under ``folder`` (a local
copy, same layout); ``fmt="Parquet"`` writes Parquet data files (pyarrow).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

STAMP = "2026-11-20T01-00Z"
HIVE = "dt=2026-11-20-01-00"
PLAIN_SCHEMA = ["Bucket", "Key", "Size", "LastModifiedDate", "ETag", "StorageClass"]
VERSIONED_SCHEMA = [
    "Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate",
    "ETag", "StorageClass",
]  # fmt: skip


@dataclass
class Report:
    manifest_uri: str  # s3://destination/.../manifest.json
    symlink_uri: str
    manifest_key: str  # its key in the destination bucket
    data_keys: list[str]
    local_manifest: Path | None = None


def listed_rows(client: Any, bucket: str) -> list[dict[str, Any]]:
    """Every object of ``bucket`` as a listing gives it (boto3 ``list_objects_v2``)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [
        {
            "Bucket": bucket,
            "Key": entry["Key"],
            "Size": str(entry["Size"]),
            "LastModifiedDate": entry["LastModified"]
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "ETag": entry["ETag"].strip('"'),
            "StorageClass": "STANDARD",
            "VersionId": uuid.uuid4().hex,
            "IsLatest": "true",
            "IsDeleteMarker": "false",
        }
        for page in pages
        for entry in page.get("Contents", [])
    ]


def csv_gz(rows: list[dict[str, Any]], schema: list[str], *, slash_safe: bool) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for row in rows:
        key = quote_plus(row["Key"], safe="/" if slash_safe else "")
        writer.writerow([key if name == "Key" else row[name] for name in schema])
    return gzip.compress(text.getvalue().encode())


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "bucket": [r["Bucket"] for r in rows],
            "key": [r["Key"] for r in rows],  # Parquet keys are not URL-encoded
            "size": [int(r["Size"]) for r in rows],
            "last_modified_date": [r["LastModifiedDate"] for r in rows],
            "e_tag": [r["ETag"] for r in rows],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def write_report(
    client: Any,
    source: str,
    destination: str,
    *,
    prefix: str = "inventory",
    config: str = "daily",
    files: int = 2,
    versioned: bool = False,
    extra_rows: list[dict[str, Any]] = (),  # type: ignore[assignment]
    fmt: str = "CSV",
    local: Path | None = None,
    corrupt_md5: bool = False,
) -> Report:
    """List ``source``, write the report into ``destination`` (and ``local``); see above."""
    rows = listed_rows(client, source) + list(extra_rows)
    schema = VERSIONED_SCHEMA if versioned else PLAIN_SCHEMA
    base = f"{prefix}/{source}/{config}"
    entries, data_keys, blobs = [], [], {}
    for number in range(files):
        part = rows[number::files]
        suffix = "parquet" if fmt == "Parquet" else "csv.gz"
        key = f"{base}/data/{uuid.uuid4()}.{suffix}"
        blob = (
            parquet_bytes(part)
            if fmt == "Parquet"
            else csv_gz(part, schema, slash_safe=number % 2 == 0)
        )
        md5 = hashlib.md5(blob).hexdigest()
        if corrupt_md5 and number == files - 1:
            md5 = "0" * 32
        entries.append({"key": key, "size": len(blob), "MD5checksum": md5})
        data_keys.append(key)
        blobs[key] = blob
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{destination}",
        "version": "2016-11-30",
        "creationTimestamp": "1795654800000",
        "fileFormat": fmt,
        "fileSchema": ", ".join(schema),
        "files": entries,
    }
    manifest_key = f"{base}/{STAMP}/manifest.json"
    blobs[manifest_key] = json.dumps(manifest, indent=2).encode()
    symlink_key = f"{base}/hive/{HIVE}/symlink.txt"
    blobs[symlink_key] = "".join(f"s3://{destination}/{k}\n" for k in data_keys).encode()
    for key, blob in blobs.items():
        client.put_object(Bucket=destination, Key=key, Body=blob)
        if local is not None:
            path = local / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
    return Report(
        manifest_uri=f"s3://{destination}/{manifest_key}",
        symlink_uri=f"s3://{destination}/{symlink_key}",
        manifest_key=manifest_key,
        data_keys=data_keys,
        local_manifest=None if local is None else local / manifest_key,
    )
