"""How long a 1,000,000-object S3 Inventory report takes to resolve, cold and remembered.

Writes a local copy of a report in S3's format (manifest.json + 2 gzipped, headerless,
quoted CSV data files; keys URL-encoded, with spaces and nested prefixes), then times
``resolve_pool(manifest)``: without a memo folder (every data file read, MD5-checked,
parsed, keyed, sorted), the first time with one (the same, plus writing the memo), and
again (the memo read back; no data file opened). Each reader (``--readers``: ``columns``,
the pyarrow one, and ``python``, the row-by-row one, set by ``ALCLI_INVENTORY_READER``) is
timed in every round, interleaved, and their items must be equal; the top-level keys are the
first reader's medians.

    flock /work/wt/bench.lock /work/wt/timed.sh \
        .venv/bin/python benchmarks/inventory_scale.py --rows 1000000 --rounds 2 --json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np

from alcli.sources import resolve_pool


def write_report(folder: Path, rows: int, files: int = 2) -> Path:
    rng = np.random.default_rng(0)
    tags = [f"{value:032x}" for value in rng.integers(0, 2**63, size=rows)]
    data = folder / "inventory" / "src" / "daily" / "data"
    data.mkdir(parents=True)
    entries = []
    for part in range(files):
        lines = [
            f'"src","{quote_plus(f"imgs/{i // 1000:04d}/img {i:07d}.png", safe="/")}",'
            f'"{1000 + i % 977}","2026-11-20T00:00:00.000Z","{tags[i]}","STANDARD"\n'
            for i in range(part, rows, files)
        ]
        blob = gzip.compress("".join(lines).encode(), compresslevel=6)
        name = f"part-{part}.csv.gz"
        (data / name).write_bytes(blob)
        entries.append(
            {
                "key": f"inventory/src/daily/data/{name}",
                "size": len(blob),
                "MD5checksum": hashlib.md5(blob).hexdigest(),
            }
        )
    manifest = folder / "inventory" / "src" / "daily" / "2026-11-20T01-00Z" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    schema = "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass"
    manifest.write_text(
        json.dumps({"fileFormat": "CSV", "fileSchema": schema, "files": entries}, indent=2)
    )
    return manifest


def timed(function) -> tuple[dict[str, float], object]:
    """Wall and this process's CPU seconds: on a shared machine the CPU is what the code costs."""
    started, cpu = time.perf_counter(), time.process_time()
    result = function()
    return {
        "wall_s": round(time.perf_counter() - started, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }, result


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(run[name] for run in runs), 2) for name in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--readers", default="columns,python", help="comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    readers = [name.strip() for name in args.readers.split(",") if name.strip()]
    folder = Path(tempfile.mkdtemp(prefix="inventory-"))
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        reader: {"cold": [], "first": [], "warm": []} for reader in readers
    }
    reference: object = None
    try:
        print(f"writing a {args.rows:,}-row report under {folder}", file=sys.stderr)
        manifest = str(write_report(folder, args.rows))
        for number in range(args.rounds):
            for reader in readers:
                os.environ["ALCLI_INVENTORY_READER"] = "python" if reader == "python" else ""
                memo = folder / f"memo-{reader}-{number}"
                cold_s, pool = timed(lambda: resolve_pool(manifest))
                first_s, first = timed(lambda memo=memo: resolve_pool(manifest, memo_dir=memo))
                warm_s, warm = timed(lambda memo=memo: resolve_pool(manifest, memo_dir=memo))
                items = list(pool.items)  # type: ignore[attr-defined]
                assert items == list(first.items) == list(warm.items)  # type: ignore[attr-defined]
                if reference is None:
                    reference = items
                assert items == reference, f"{reader} gives other items"
                del pool, first, warm, items
                runs[reader]["cold"].append(cold_s)
                runs[reader]["first"].append(first_s)
                runs[reader]["warm"].append(warm_s)
                print(f"round {number + 1} {reader}: cold {cold_s}, first {first_s}, "
                      f"remembered {warm_s}", file=sys.stderr)  # fmt: skip
        per_reader = {
            reader: {
                "resolve_cold": median_of(found["cold"]),
                "resolve_first_with_memo": median_of(found["first"]),
                "resolve_warm_memo": median_of(found["warm"]),
                "rounds": found,
            }
            for reader, found in runs.items()
        }
        main_reader = per_reader[readers[0]]
        report: dict[str, object] = {
            "rows": args.rows,
            "items": len(reference),  # type: ignore[arg-type]
            "reader": readers[0],
            "resolve_cold": main_reader["resolve_cold"],
            "resolve_first_with_memo": main_reader["resolve_first_with_memo"],
            "resolve_warm_memo": main_reader["resolve_warm_memo"],
            "readers": per_reader,
            "data_bytes": sum(p.stat().st_size for p in folder.rglob("*.csv.gz")),
            "machine": {
                "cores": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
        }
        if "python" in per_reader and readers[0] != "python":
            old, new = per_reader["python"], main_reader
            report["cold_cpu_vs_python"] = round(
                new["resolve_cold"]["cpu_s"] / old["resolve_cold"]["cpu_s"], 3
            )
            report["first_cpu_vs_python"] = round(
                new["resolve_first_with_memo"]["cpu_s"] / old["resolve_first_with_memo"]["cpu_s"],
                3,
            )
    finally:
        os.environ.pop("ALCLI_INVENTORY_READER", None)
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
