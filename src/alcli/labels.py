"""Label files in and out: ``uri,label`` CSV, URI lists, matching them to the pool, atomic writes.

Every file here is read as UTF-8 with ``surrogateescape`` (a file name that is not UTF-8 keeps
its own bytes, so it matches the pool's name for it) and written the same way, through a
temporary file and a rename, so a crash never leaves half a file. A CSV's ``uri`` column is
read by one reader, ``alcli.sources.manifests.CsvTable``, the one manifests use: the same
header (names stripped, any case) and the same blank rows skipped everywhere.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from alcli.errors import LabelsError
from alcli.output import csv_text
from alcli.sources import normalize_uri
from alcli.sources.manifests import CsvTable


def _open_text(path: str | os.PathLike[str]) -> TextIO:
    # surrogateescape: a file name that is not UTF-8 matches the pool's name for it
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


# --- reading ------------------------------------------------------------------------------


def load_labels_csv(path: str | os.PathLike[str], *, normalize_uris: bool = True) -> dict[str, str]:
    """``uri -> label`` from a CSV with a ``uri,label`` header (other columns are ignored).

    URIs are normalised like pool items (``alcli.sources.normalize_uri``: relative local
    paths against the current directory) unless ``normalize_uris`` is false. A row without a
    URI or a label, or a URI given twice with different labels, is a ``LabelsError`` naming
    its line.
    """
    try:
        with _open_text(path) as f:
            return _parse_labels(f, str(path), normalize_uris=normalize_uris)
    except FileNotFoundError:
        raise LabelsError(f"labels file not found: {path}") from None
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read labels file: {exc.strerror}") from None


def _parse_labels(lines: Iterable[str], name: str, *, normalize_uris: bool) -> dict[str, str]:
    table = CsvTable(lines)
    columns = table.columns
    if "uri" not in columns or "label" not in columns:
        raise LabelsError(
            f"{name}: line 1 must be a header with 'uri' and 'label' columns, got {table.header}",
            hint="write the file as CSV starting with the line uri,label",
        )
    uri_col, label_col = columns.index("uri"), columns.index("label")
    labels: dict[str, str] = {}
    try:
        for row in table.rows():
            line = table.line
            if len(row) <= max(uri_col, label_col):
                raise LabelsError(f"{name}: line {line}: expected uri,label, got {row}")
            uri, label = row[uri_col].strip(), row[label_col].strip()
            if not uri:
                raise LabelsError(f"{name}: line {line}: empty uri")
            if not label:
                raise LabelsError(f"{name}: line {line}: no label for {uri}")
            key = normalize_uri(uri) if normalize_uris else uri
            if labels.get(key, label) != label:
                raise LabelsError(
                    f"{name}: line {line}: {uri} labeled {label!r} here and {labels[key]!r} before"
                )
            labels[key] = label
    except csv.Error as exc:
        raise LabelsError(f"{name}: line {table.line}: bad CSV: {exc}") from None
    return labels


def read_uri_list(path: str) -> list[str]:
    """URIs from a file: a ``.csv`` with a ``uri`` column, else one URI per line.

    Used for ``--exclude`` and ``--uris``; ``#`` comments and blank lines are skipped.
    """
    with _open_text(path) as f:
        if path.endswith(".csv"):
            table = CsvTable(f)
            if "uri" not in table.columns:
                raise LabelsError(f"{path}: a CSV here needs a 'uri' column")
            column = table.columns.index("uri")
            raw = [row[column] if column < len(row) else "" for row in table.rows()]
        else:
            raw = [line.strip() for line in f]
    return [normalize_uri(u) for u in raw if u and not u.startswith("#")]


# --- matching -----------------------------------------------------------------------------


def match_labels(
    uris: Sequence[str],
    labels: Mapping[str, str],
    *,
    what: str = "labeled",
    hint: str = "check the pool spec and that the file's URIs use the same form",
) -> tuple[np.ndarray, list[str]]:
    """Rows of ``uris`` that ``labels`` names, and their labels, in pool order.

    A URI that the pool lacks is a ``LabelsError`` (a typo or the wrong pool is far more
    likely than an intended extra), naming how many and the first few, with ``hint``.
    """
    if not labels:
        return np.zeros(0, dtype=np.int64), []
    # One scan of the pool for the (few) labeled URIs, not a uri -> row map of the whole pool:
    # at 10M items that map alone was ~1 GiB. A URI given twice keeps its last row, as before.
    index = {uri: row for row, uri in enumerate(uris) if uri in labels}
    missing = [uri for uri in labels if uri not in index]
    if missing:
        shown = ", ".join(missing[:3])
        raise LabelsError(
            f"{len(missing)} {what} URIs are not in the pool (first: {shown})", hint=hint
        )
    rows = np.sort(np.fromiter((index[uri] for uri in labels), dtype=np.int64, count=len(labels)))
    return rows, [labels[uris[r]] for r in rows]


# --- writing ------------------------------------------------------------------------------


def format_labels_csv(labels: Mapping[str, str]) -> str:
    """``uri,label`` CSV text (header included) for ``labels``, quoted as CSV needs."""
    return csv_text([("uri", "label"), *labels.items()])


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: all or nothing.

    A non-UTF-8 file name (surrogate-escaped) is written as its own bytes.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
