"""Who answers labels: a labels file, a command, or a person working through a folder.

Every oracle has one method, ``label(uris) -> {uri: label}``, so a labeling service can be
plugged in later without touching the agent. It either answers every URI it was asked, or
raises ``OracleError`` (it cannot answer: the run stops, everything bought so far is saved),
or raises ``PendingLabels`` (it will answer later: a person is labeling; the agent saves its
state and exits cleanly, and ``alcli auto --resume DIR`` asks again).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from alcli.errors import LabelsError, OracleError
from alcli.label_studio import Project
from alcli.labels import (
    document_root,
    format_labels_csv,
    label_studio_labels,
    label_studio_tasks,
    load_labels,
    load_labels_csv,  # noqa: F401 - re-exported (its first home)
    task_image,
    task_uri,
    write_atomic,
)
from alcli.output import has_line_break
from alcli.sources import normalize_uri

# ``load_labels_csv``, ``format_labels_csv`` and ``write_atomic`` moved to ``alcli.labels``;
# importing them from here still works.

#: Seconds to wait for a killed oracle command's process group to close its pipes.
KILL_WAIT_S = 10.0


def _first_few(uris: Iterable[str], count: int = 3) -> str:
    shown: list[str] = []
    for uri in uris:
        if len(shown) == count:
            break
        shown.append(_printable(uri))
    return ", ".join(shown)


def _not_utf8(text: str) -> bool:
    """Whether ``text`` carries bytes that were not UTF-8 (decoded with surrogateescape)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


class PendingLabels(Exception):  # noqa: N818 - a state to wait for, not a failure
    """The labels will come later: a person labels ``count`` items (``todo`` says where).

    The directory oracle's person has ``batch_path`` to label into ``labels_path``; a
    labeling server's (``project``) works in its web page. Not an ``AlcliError``: nothing went
    wrong. The agent saves its state before this reaches the CLI, which prints what to do and
    exits 0.
    """

    def __init__(
        self,
        batch_path: Path | None,
        labels_path: Path | None,
        count: int,
        *,
        todo: str | None = None,
        project: str | None = None,
    ) -> None:
        self.batch_path = batch_path
        self.labels_path = labels_path
        self.count = count
        self.project = project
        self.todo = todo or f"fill {labels_path}"
        super().__init__(f"{count} items to label: {self.todo}, then alcli auto --resume")

    def as_dict(self) -> dict[str, object]:
        """What ``alcli auto --json`` prints about the wait (no empty fields)."""
        fields = {
            "count": self.count,
            "batch": None if self.batch_path is None else str(self.batch_path),
            "labels": None if self.labels_path is None else str(self.labels_path),
            "project": self.project,
        }
        return {key: value for key, value in fields.items() if value is not None}


@runtime_checkable
class Oracle(Protocol):
    """Anything that can label pool items."""

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        """A label for every URI in ``uris``; raise ``OracleError`` or ``PendingLabels``."""
        ...


class LabelsFileOracle:
    """Answers from a labels file (alcli's ``uri,label`` CSV or a Label Studio export,
    detected): a simulation, or a team that labeled everything."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.labels = load_labels(path)

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        answer: dict[str, str] = {}
        missing: list[str] = []
        for uri in uris:
            label = self.labels.get(normalize_uri(uri))
            if label is None:
                missing.append(uri)
            else:
                answer[uri] = label
        if missing:
            raise OracleError(
                f"labels file {self.path} has no label for {len(missing)} URIs "
                f"(first: {_first_few(missing)})",
                hint="add them to the file or remove them from the pool",
            )
        return answer


class CommandOracle:
    """Runs a program (no shell) that reads URIs on stdin and writes ``uri,label`` lines.

    The program gets every URI of one request, one per line (UTF-8), and must answer each of
    them, once, in UTF-8 CSV; a header line ``uri,label`` in its output is allowed. A URI
    with a line break cannot be sent (it would read as two): asking for one is an
    ``OracleError``, and ``alcli auto`` leaves such items out of the race. Use it to wrap a
    labeling service's client, or a script that looks labels up somewhere.

    The program runs in its own session: on timeout the whole process group is killed, so a
    shell script's children do not outlive it.
    """

    def __init__(self, argv: Sequence[str] | str, *, timeout_s: float = 600.0) -> None:
        self.argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not self.argv:
            raise OracleError("the oracle command is empty", hint="give a program to run")
        self.timeout_s = timeout_s

    @staticmethod
    def can_ask(uri: str) -> bool:
        """Whether ``uri`` fits the one-URI-per-line protocol (no line break in it)."""
        return not has_line_break(uri)

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        if not uris:
            return {}
        cannot = [uri for uri in uris if not self.can_ask(uri)]
        if cannot:
            raise OracleError(
                f"{len(cannot)} URIs have a line break in them, which one URI per line "
                f"cannot carry to oracle command {self.argv[0]} (first: {cannot[0]!r})",
                hint="rename those files, or leave them out of the pool",
            )
        data = "".join(f"{uri}\n" for uri in uris).encode("utf-8", "surrogateescape")
        stdout, stderr = self._run(data)
        try:
            text = stdout.decode("utf-8")
        except UnicodeDecodeError as exc:
            # Names that are not UTF-8 were sent as their own bytes and may come back so;
            # anything else that is not UTF-8 (a label, a stray byte) is the command's error.
            if not any(_not_utf8(uri) for uri in uris):
                line = stdout[: exc.start].count(b"\n") + 1
                raise OracleError(
                    f"oracle command {self.argv[0]}: output line {line} is not UTF-8 text "
                    f"(byte 0x{stdout[exc.start]:02x}){_last_line(stderr)}",
                    hint="the command must write uri,label lines in UTF-8",
                ) from None
            text = stdout.decode("utf-8", "surrogateescape")
        answer = self._parse_answer(text, uris, stderr)
        odd = next((uri for uri, label in answer.items() if _not_utf8(label)), None)
        if odd is not None:
            raise OracleError(
                f"oracle command {self.argv[0]}: the label of {_printable(odd)} is not UTF-8 "
                f"text: {_printable(answer[odd])}",
                hint="the command must write uri,label lines in UTF-8",
            )
        return answer

    def _run(self, data: bytes) -> tuple[bytes, bytes]:
        """Run the command on ``data``; its output, or ``OracleError`` (failed, timed out)."""
        name = self.argv[0]
        try:
            process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed whole on timeout
            )
        except FileNotFoundError:
            raise OracleError(f"oracle command not found: {name}") from None
        except PermissionError:
            raise OracleError(f"oracle command is not executable: {name}") from None
        try:
            stdout, stderr = process.communicate(data, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            stderr = _kill_group(process)
            raise OracleError(
                f"oracle command {name} timed out after {self.timeout_s:g} s{_last_line(stderr)}",
                hint="raise the oracle timeout or make the command faster",
            ) from None
        except BaseException:  # Ctrl-C: no orphan keeps labeling (or billing) behind us
            _kill_group(process)
            raise
        if process.returncode != 0:
            raise OracleError(
                f"oracle command {name} exited with status {process.returncode}{_last_line(stderr)}"
            )
        return stdout, stderr

    def _parse_answer(self, stdout: str, uris: Sequence[str], stderr: bytes) -> dict[str, str]:
        name = self.argv[0]
        asked = {uri: uri for uri in uris}
        by_canonical: dict[str, str] | None = None  # built only if an answer is spelled differently
        answer: dict[str, str] = {}
        unknown: list[str] = []
        for number, row in enumerate(csv.reader(io.StringIO(stdout, newline="")), start=1):
            if not row or (number == 1 and [c.strip().lower() for c in row] == ["uri", "label"]):
                continue
            if len(row) != 2 or not row[1].strip():
                raise OracleError(
                    f"oracle command {name}: output line {number} is not uri,label: "
                    f"{_printable(','.join(row)[:200])}{_last_line(stderr)}"
                )
            uri = asked.get(row[0])
            if uri is None:
                if by_canonical is None:
                    by_canonical = {normalize_uri(u): u for u in uris}
                uri = by_canonical.get(normalize_uri(row[0]))
            if uri is None:
                unknown.append(row[0])
                continue
            label = row[1].strip()
            if answer.get(uri, label) != label:
                raise OracleError(
                    f"oracle command {name} labeled {uri!r} twice, {answer[uri]!r} and {label!r}",
                    hint="the command must give each URI one label",
                )
            answer[uri] = label
        if unknown:
            raise OracleError(
                f"oracle command {name} answered {len(unknown)} URIs it was not asked "
                f"(first: {_first_few(unknown)})"
            )
        missing = [uri for uri in uris if uri not in answer]
        if missing:
            raise OracleError(
                f"oracle command {name} gave no label for {len(missing)} of {len(uris)} URIs "
                f"(first: {_first_few(missing)}){_last_line(stderr)}"
            )
        return answer


def _kill_group(process: subprocess.Popen[bytes]) -> bytes:
    """Kill ``process`` and everything in its process group; return what it wrote to stderr.

    The group, not the process: a shell script's ``sleep`` (or a client it started) holds
    the pipes and would go on running after its parent died.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        _, stderr = process.communicate(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:  # a member left the group and holds the pipes
        process.kill()
        process.wait()
        return b""
    return stderr or b""


def _last_line(stderr: str | bytes | None) -> str:
    """``: <last non-empty stderr line>`` for an error message, or nothing."""
    if not stderr:
        return ""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f": {_printable(lines[-1][:300])}" if lines else ""


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so it stays one line of a message."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_BATCH_NAME = re.compile(r"^batch-(\d{3,})\.csv$")


class DirectoryOracle:
    """A person in the loop, through files in ``path``.

    Asked for labels, it writes ``batch-NNN.csv`` (a ``uri,label`` file with empty labels) and
    ``batch-NNN.labelstudio.json`` (a Label Studio import: images under the document root of
    ``$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` as local-files URLs) and raises
    ``PendingLabels``. When ``batch-NNN.labels.csv`` or ``batch-NNN.labels.json`` exists (alcli's
    CSV, or Label Studio's JSON, JSON_MIN or CSV export, detected), asking for the same URIs
    again returns its labels; cancelled annotations count as no label.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        if not uris:
            return {}
        batch = self._find_batch(uris)
        if batch is None:
            batch = self._write_batch(uris)
        labels_path = batch.with_name(batch.stem + ".labels.csv")
        exported = batch.with_name(batch.stem + ".labels.json")
        if not labels_path.exists() and exported.exists():
            labels_path = exported
        if not labels_path.exists():
            raise PendingLabels(batch, labels_path, len(uris))
        labels = load_labels(labels_path, normalize_uris=False)
        for uri, label in list(labels.items()):
            canonical = normalize_uri(uri)
            if labels.setdefault(canonical, label) != label:
                raise LabelsError(
                    f"{labels_path} labels {canonical!r} twice, {labels[canonical]!r} and "
                    f"{label!r} (spelled {uri!r})",
                    hint="give each item one label",
                )
        answer = {uri: labels[uri] for uri in uris if uri in labels}
        missing = [uri for uri in uris if uri not in answer]
        if missing:
            raise OracleError(
                f"{labels_path} has no label for {len(missing)} of {len(uris)} URIs "
                f"(first: {_first_few(missing)})",
                hint="label every row of the batch, then resume",
            )
        return answer

    def _batches(self) -> list[tuple[int, Path]]:
        if not self.path.is_dir():
            return []
        found = []
        for entry in self.path.iterdir():
            match = _BATCH_NAME.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def _find_batch(self, uris: Sequence[str]) -> Path | None:
        """The batch already written for exactly these URIs, if any (the resume case)."""
        wanted = set(uris)
        for _, path in self._batches():
            with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
                rows = list(csv.reader(f))[1:]
            if {row[0] for row in rows if row} == wanted:
                return path
        return None

    def _write_batch(self, uris: Sequence[str]) -> Path:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OracleError(
                f"cannot create labeling folder {self.path}: {exc.strerror}"
            ) from None
        batches = self._batches()
        number = batches[-1][0] + 1 if batches else 1
        batch = self.path / f"batch-{number:03d}.csv"
        tasks = label_studio_tasks(uris, root=document_root(), strict=False)
        studio = json.dumps(tasks, indent=1, ensure_ascii=False)
        # The Label Studio file first: the CSV's existence is what marks the batch as written.
        write_atomic(batch.with_name(batch.stem + ".labelstudio.json"), studio + "\n")
        write_atomic(batch, format_labels_csv(dict.fromkeys(uris, "")))
        return batch


class LabelStudioOracle:
    """People labeling in a Label Studio project, live: ``label-studio://HOST:PORT/PROJECT_ID``.

    Asked for labels, it imports the items the project lacks as tasks (``data.image`` as
    ``select --format label-studio`` writes it, ``data.uri`` the pool's URI) and answers once
    every one has an annotation that was not cancelled (ground truth, else the latest, wins);
    until then it raises ``PendingLabels`` (the agent saves its state; ``--resume`` asks again,
    and nothing is imported twice: tasks are matched by ``data.uri``). The token comes from
    ``LABEL_STUDIO_API_KEY`` and is never printed.
    """

    def __init__(self, spec: str, *, token: str | None = None) -> None:
        self.project = Project.from_spec(spec, token=token)
        self.spec = spec
        self.root = document_root()

    def check(self, uris: Sequence[str]) -> None:
        """Before anything is embedded: the server answers, the token and the project are
        right, and every item has a URL Label Studio can show (``LabelsError`` if not)."""
        self.project.check()
        for uri in uris:
            task_image(uri, self.root)

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        if not uris:
            return {}
        wanted = {normalize_uri(uri): uri for uri in uris}
        tasks = self._tasks(wanted)
        new = [uri for canonical, uri in wanted.items() if canonical not in tasks]
        if new:
            self.project.import_tasks(label_studio_tasks(new, root=self.root))
            tasks = self._tasks(wanted)
            lost = [uri for canonical, uri in wanted.items() if canonical not in tasks]
            if lost:
                raise OracleError(
                    f"Label Studio project {self.project.project_id} did not keep "
                    f"{len(lost)} imported tasks (first: {_first_few(lost)})"
                )
        labels = label_studio_labels(
            [task for found in tasks.values() for task in found], self.spec, self.root
        )
        answer = {
            uri: labels[canonical] for canonical, uri in wanted.items() if canonical in labels
        }
        if len(answer) < len(uris):
            waiting = len(uris) - len(answer)
            raise PendingLabels(
                None,
                None,
                waiting,
                todo=f"annotate {waiting} of {len(uris)} tasks in {self.project.where}"
                + (f" ({len(new)} imported now)" if new else ""),
                project=self.project.where,
            )
        return answer

    def _tasks(self, wanted: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
        """The project's tasks for the ``wanted`` URIs (canonical), by URI."""
        found: dict[str, list[dict[str, Any]]] = {}
        for task in self.project.export(all_tasks=True):
            data = task.get("data") if isinstance(task, dict) else None
            uri = task_uri(data, self.root) if isinstance(data, dict) else None
            if uri is not None and uri in wanted:
                found.setdefault(uri, []).append(task)
        return found
