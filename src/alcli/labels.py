"""Label files in and out: ``uri,label`` CSV, URI lists, matching them to the pool, atomic writes.

Every file here is read as UTF-8 with ``surrogateescape`` (a file name that is not UTF-8 keeps
its own bytes, so it matches the pool's name for it) and written the same way, through a
temporary file and a rename, so a crash never leaves half a file. A CSV's ``uri`` column is
read by one reader, ``alcli.sources.manifests.CsvTable``, the one manifests use: the same
header (names stripped, any case) and the same blank rows skipped everywhere.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TextIO
from urllib.parse import quote, unquote

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
    find = getattr(uris, "find", None)  # a pool table's URI column: a search per label
    if find is not None:
        wanted = list(labels)
        index = {uri: int(row) for uri, row in zip(wanted, find(wanted), strict=True) if row >= 0}
    else:
        # One scan of the pool for the (few) labeled URIs, not a uri -> row map of the whole
        # pool: at 10M items that map alone was ~1 GiB. A URI given twice keeps its last row.
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


# --- Label Studio -------------------------------------------------------------------------
# Tasks out (``alcli select --format label-studio``, the directory and live oracles) and
# exports back in (``--labeled``, the directory oracle): JSON, JSON_MIN and CSV, as Label
# Studio 1.23 writes them. Each task carries the pool's URI in ``data.uri`` as well as the URL
# Label Studio shows (``data.image``), so an export maps back to the pool without guessing.

#: The environment variable Label Studio reads for its local-files root; alcli reads it too.
DOCUMENT_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
#: Where Label Studio serves files under its document root (``?d=`` a path relative to it).
LOCAL_FILES_URL = "/data/local-files/?d="
#: The labeling config's names the pre-annotations use: ``<Image name="image" value="$image"/>``
#: and ``<Choices name="choice" toName="image">`` (docs/labeling.md gives the whole config).
FROM_NAME, TO_NAME = "choice", "image"
#: Label Studio's import limits: tasks per file and bytes per upload.
MAX_TASKS_PER_FILE = 250_000
MAX_BYTES_PER_FILE = 50 * 1024 * 1024

#: ``--labels-format`` values; ``auto`` detects the others from the file.
LABELS_FORMATS = ("auto", "alcli", "label-studio-json", "label-studio-json-min", "label-studio-csv")
#: Columns of a JSON_MIN / CSV export that are not the annotation's label.
_EXPORT_META = frozenset(
    {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "image", "uri"}
)


def document_root(option: str | None = None) -> str | None:
    """The local-files document root: ``option``, else ``$LABEL_STUDIO_LOCAL_FILES_...``."""
    root = option or os.environ.get(DOCUMENT_ROOT_ENV) or None
    return None if root is None else os.path.abspath(os.path.expanduser(root))


def task_image(uri: str, root: str | None) -> str:
    """The URL Label Studio shows for pool item ``uri``.

    A local file becomes ``/data/local-files/?d=REL`` (REL: its path under ``root``, URL
    quoted); any other URI (``s3://``, served by a connected source storage) stays as it is.
    A local file with no ``root``, or outside it, is a ``LabelsError``.
    """
    from alcli.sources import is_local

    if not is_local(uri):
        return uri
    if root is None:
        raise LabelsError(
            f"{uri} is a local file, and Label Studio serves local files only under a "
            "document root",
            hint=f"pass --document-root DIR or set {DOCUMENT_ROOT_ENV} (as for label-studio)",
        )
    prefix = _root_prefix(root)
    path = uri if os.path.isabs(uri) else os.path.abspath(uri)
    if not path.startswith(prefix):  # pool URIs are absolute and normalised: a prefix test
        raise LabelsError(
            f"{uri} is outside the document root {root}",
            hint="choose a --document-root that holds the whole pool",
        )
    rel = path[len(prefix) :]
    return LOCAL_FILES_URL + quote(rel.replace(os.sep, "/").encode("utf-8", "surrogateescape"))


@functools.lru_cache(maxsize=8)
def _root_prefix(root: str) -> str:
    """``root`` absolute and normalised, with one trailing separator."""
    return os.path.join(os.path.abspath(root), "")


def image_uri(url: str, root: str | None) -> str | None:
    """The pool URI back from a task's image URL (``task_image``'s inverse); None if unknown."""
    at = url.find(LOCAL_FILES_URL)
    if at >= 0:
        if root is None:
            return None
        rel = unquote(url[at + len(LOCAL_FILES_URL) :].split("&", 1)[0], errors="surrogateescape")
        return normalize_uri(os.path.join(root, rel))
    return normalize_uri(url) if url else None


def label_studio_tasks(
    uris: Sequence[str],
    *,
    root: str | None,
    scores: Sequence[float | None] | None = None,
    model_version: str | None = None,
    predicted: Sequence[str | None] | None = None,
    strict: bool = True,
) -> list[dict[str, object]]:
    """Label Studio tasks for ``uris``: ``data.image`` (``task_image``) and ``data.uri``.

    With ``model_version``, each task gets one ``predictions`` entry: that version (strategy
    and model fingerprint), the strategy's ``score`` (the Community edition sorts tasks by it)
    and, where ``predicted`` names a class, that class as a ``choices`` pre-annotation.
    Not ``strict``: a local file with no document root, or outside it, keeps its path as the
    image (the file still imports; Label Studio cannot show it).
    """
    tasks: list[dict[str, object]] = []
    for i, uri in enumerate(uris):
        try:
            image = task_image(uri, root)
        except LabelsError:
            if strict:
                raise
            image = uri
        task: dict[str, object] = {"data": {"image": image, "uri": uri}}
        if model_version is not None:
            prediction: dict[str, object] = {"model_version": model_version, "result": []}
            score = None if scores is None else scores[i]
            if score is not None and not math.isnan(score):  # NaN: the strategy gave none
                prediction["score"] = float(score)
            label = None if predicted is None else predicted[i]
            if label is not None:
                prediction["result"] = [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": [str(label)]},
                    }
                ]
            task["predictions"] = [prediction]
        tasks.append(task)
    return tasks


def split_tasks(
    tasks: Sequence[Mapping[str, object]],
    *,
    max_tasks: int = MAX_TASKS_PER_FILE,
    max_bytes: int = MAX_BYTES_PER_FILE,
) -> list[str]:
    """``tasks`` as JSON documents (lists), each within ``max_tasks`` and ``max_bytes``.

    A single task over ``max_bytes`` is a ``LabelsError``: no file could import it.
    """
    documents: list[str] = []
    part: list[str] = []
    size = 2  # "[" and "]\n"
    for task in tasks:
        text = json.dumps(task, ensure_ascii=False)
        # The encoded size: a surrogate-escaped name is written as its own bytes.
        length = len(text.encode("utf-8", "surrogateescape")) + 2  # ",\n"
        if length + 2 > max_bytes:
            raise LabelsError(f"one task is {length:,} bytes, over the {max_bytes:,} limit")
        if part and (len(part) >= max_tasks or size + length > max_bytes):
            documents.append("[\n" + ",\n".join(part) + "\n]\n")
            part, size = [], 2
        part.append(text)
        size += length
    documents.append("[\n" + ",\n".join(part) + "\n]\n")
    return documents


def write_tasks(folder: str | os.PathLike[str], documents: Sequence[str]) -> list[Path]:
    """Write ``split_tasks``' documents as ``tasks-001.json``, ... in ``folder`` (atomically)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabelsError(f"cannot create {folder}: {exc.strerror}") from None
    written = []
    for number, text in enumerate(documents, start=1):
        target = path / f"tasks-{number:03d}.json"
        write_atomic(target, text)
        written.append(target)
    return written


def load_labels(
    path: str | os.PathLike[str],
    *,
    labels_format: str = "auto",
    normalize_uris: bool = True,
    root: str | None = None,
) -> dict[str, str]:
    """``uri -> label`` from alcli's ``uri,label`` CSV or a Label Studio export.

    ``labels_format``: one of ``LABELS_FORMATS`` (``auto`` detects it). In an export, tasks
    map back to pool URIs by ``data.uri`` (alcli writes it), else by their image URL
    (``image_uri``, local files under ``root``, default ``document_root()``). Cancelled or
    skipped annotations are ignored; of the others a ground-truth annotation wins, then the
    latest. A task with no annotation is not labeled. Every problem (a task with no image, an
    annotation with no choice) is reported with its task id in one ``LabelsError``.
    """
    if labels_format not in LABELS_FORMATS:
        raise LabelsError(
            f"--labels-format must be one of {', '.join(LABELS_FORMATS)}, not {labels_format!r}"
        )
    try:
        with _open_text(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise LabelsError(f"labels file not found: {path}") from None
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read labels file: {exc.strerror}") from None
    name = str(path)
    json_text = text.lstrip().startswith(("[", "{"))
    if labels_format == "alcli" or (labels_format == "auto" and not json_text):
        kind = "alcli" if labels_format == "alcli" else detect_labels_format(text, name)
        if kind == "alcli":
            return _parse_labels(io.StringIO(text, newline=""), name, normalize_uris=normalize_uris)
    else:
        kind = labels_format
    root = document_root() if root is None else root
    if kind == "label-studio-csv":
        return _from_rows(_csv_records(text, name), name, root)
    data = _json(text, name)  # parsed once: a 100,000-task export is ~50 MB
    if not isinstance(data, list):
        raise LabelsError(f"{name}: a Label Studio export is a JSON list of tasks")
    if kind == "auto":
        kind = _json_kind(data)
    if kind == "label-studio-json":
        return label_studio_labels(data, name, root)
    return _from_rows(data, name, root)


def _json(text: str, name: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsError(f"{name}: line {exc.lineno}: not JSON: {exc.msg}") from None


def _json_kind(data: object) -> str:
    """Tasks with ``annotations`` (or ``data``): the JSON export; flat records: JSON_MIN."""
    full = isinstance(data, list) and any(
        isinstance(task, dict) and ("annotations" in task or "data" in task) for task in data[:100]
    )
    return "label-studio-json" if full else "label-studio-json-min"


def detect_labels_format(text: str, name: str = "labels") -> str:
    """Which of ``LABELS_FORMATS`` ``text`` is: JSON with ``annotations`` is Label Studio's
    JSON, other JSON its JSON_MIN; CSV with ``annotation_id`` or ``id`` is its CSV, else alcli's."""
    if text.lstrip().startswith(("[", "{")):
        return _json_kind(_json(text, name))
    table = CsvTable(io.StringIO(text, newline=""))
    columns = set(table.columns)
    if "label" in columns and "uri" in columns and not columns & {"annotation_id", "id"}:
        return "alcli"
    return "label-studio-csv" if columns & {"annotation_id", "id"} else "alcli"


class _Vote(NamedTuple):
    """One usable annotation, ranked: ground truth first, then the latest."""

    rank: tuple[bool, str, int]
    label: str


def label_studio_labels(
    tasks: Sequence[object], name: str = "export", root: str | None = None
) -> dict[str, str]:
    """``uri -> label`` from Label Studio's JSON export (tasks with ``annotations``)."""
    votes: dict[str, _Vote] = {}
    problems: list[str] = []
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            problems.append(f"item {number}: not a task object")
            continue
        task_id = task.get("id", f"#{number}")
        raw = task.get("data")
        data: Mapping[str, object] = raw if isinstance(raw, dict) else {}
        uri: str | None = None  # mapped once per task, when it has an annotation to count
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue  # cancelled ("skipped") in the labeling stream: no label
            label = _choice(annotation.get("result"))
            if label is None:
                problems.append(f"task {task_id}: annotation {annotation.get('id')} has no choice")
                continue
            if uri is None:
                uri = task_uri(data, root)
            if uri is None:
                problems.append(f"task {task_id}: no data.uri or data.image to map to the pool")
                break
            rank = (
                bool(annotation.get("ground_truth")),
                str(annotation.get("updated_at") or annotation.get("created_at") or ""),
                _int(annotation.get("id")),
            )
            _vote(votes, uri, _Vote(rank, label))
    _raise_problems(problems, name)
    return {uri: vote.label for uri, vote in votes.items()}


def _from_rows(rows: Iterable[object], name: str, root: str | None) -> dict[str, str]:
    """``uri -> label`` from JSON_MIN records or CSV rows: one per annotation (a task with
    none has no label column set), the data fields flattened beside them."""
    votes: dict[str, _Vote] = {}
    problems: list[str] = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            problems.append(f"item {number}: not an object")
            continue
        task_id = row.get("id", f"#{number}")
        values = [v for k, v in row.items() if k not in _EXPORT_META and v not in (None, "")]
        if not values:
            continue  # a task nobody annotated (download_all_tasks)
        if len(values) > 1:
            problems.append(f"task {task_id}: several label columns ({', '.join(map(str, row))})")
            continue
        label = _choice_value(values[0])
        if label is None:
            problems.append(f"task {task_id}: no single choice in {values[0]!r}")
            continue
        uri = task_uri(row, root)
        if uri is None:
            problems.append(f"task {task_id}: no uri or image to map to the pool")
            continue
        rank = (
            False,
            str(row.get("updated_at") or row.get("created_at") or ""),
            _int(row.get("annotation_id")),
        )
        _vote(votes, uri, _Vote(rank, label))
    _raise_problems(problems, name)
    return {uri: vote.label for uri, vote in votes.items()}


def _csv_records(text: str, name: str) -> list[dict[str, str]]:
    table = CsvTable(io.StringIO(text, newline=""))
    columns = table.columns
    try:
        return [
            {column: value.strip() for column, value in zip(columns, row, strict=False)}
            for row in table.rows()
        ]
    except csv.Error as exc:
        raise LabelsError(f"{name}: line {table.line}: bad CSV: {exc}") from None


def task_uri(data: Mapping[str, object], root: str | None) -> str | None:
    """The pool URI of a task's ``data`` (or a flattened export row): ``uri``, else the image's."""
    uri = data.get("uri")
    if isinstance(uri, str) and uri:
        return normalize_uri(uri)
    image = data.get("image")
    return image_uri(image, root) if isinstance(image, str) else None


def _choice(result: object) -> str | None:
    """The one class a classification annotation's ``result`` chose, or None."""
    if not isinstance(result, list):
        return None
    chosen = [
        item["value"]["choices"]
        for item in result
        if isinstance(item, dict)
        and isinstance(item.get("value"), dict)
        and isinstance(item["value"].get("choices"), list)
    ]
    if len(chosen) != 1 or len(chosen[0]) != 1:
        return None
    return str(chosen[0][0])


def _choice_value(value: object) -> str | None:
    """A JSON_MIN / CSV label cell: ``"cat"``, or ``{"choices": ["cat"]}`` (as text in CSV)."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return str(value)
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        return str(value[0]) if len(value) == 1 else None
    return None if value is None else str(value)


def _vote(votes: dict[str, _Vote], uri: str, vote: _Vote) -> None:
    if uri not in votes or vote.rank > votes[uri].rank:
        votes[uri] = vote


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return -1


def _raise_problems(problems: Sequence[str], name: str) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise LabelsError(
            f"{name}: {len(problems)} problems: {'; '.join(problems[:3])}{more}",
            hint="fix them in Label Studio and export again",
        )
