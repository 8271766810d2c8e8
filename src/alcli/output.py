"""One output sink for every command: results to stdout, everything else to stderr.

Modes: ``human`` (rich tables and lines), ``json`` (one JSON document on stdout) and
``quiet`` (results only, no progress or notes). Keeping this in one place is what makes
``alcli select ... | xargs ...`` safe: nothing but results ever reaches stdout, and no result
can pass for two: a URI with a line break is refused in line output (``one_per_line``; NUL
separation with ``--print0`` carries it), and CSV quotes every field a reader could split.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from alcli.errors import UsageError

HUMAN, JSON, QUIET = "human", "json", "quiet"


#: What some reader takes for the end of a line: ``str.splitlines``' set (LF, CR, VT, FF, the
#: separators FS GS RS, NEL, U+2028, U+2029); ``wc -l`` and ``xargs`` stop at LF alone.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_BREAK = re.compile(f"[{re.escape(LINE_BREAKS)}]")
_CSV_SPECIAL = re.compile(f'[,"{re.escape(LINE_BREAKS)}]')


def has_line_break(text: str) -> bool:
    return _LINE_BREAK.search(text) is not None


def one_per_line(values: Iterable[str], terminator: str = "\n") -> None:
    """Check that each of ``values`` can be written as one record ended by ``terminator``.

    If not, a ``UsageError`` naming the first that cannot: a file name holding a line break
    would read as two results (a forged one among them) to ``xargs``, ``while read`` or
    ``splitlines``. NUL ends no line, so ``terminator="\\0"`` carries such names.
    """
    for rank, value in enumerate(values, start=1):
        if terminator == "\0":
            if "\0" in value:
                raise UsageError(
                    f"result {rank} holds a NUL character: {value!r}",
                    hint="use --format jsonl",
                )
        elif has_line_break(value):
            raise UsageError(
                f"result {rank} has a line break in its name, so one per line it would read "
                f"as two: {value!r}",
                hint="use -0/--print0 (NUL-separated, for xargs -0) or --format csv/jsonl",
            )


def csv_field(value: object) -> str:
    """One CSV field (RFC 4180), quoted when it holds a comma, a quote or any line break.

    The ``csv`` module leaves a lone CR (and VT, FF, NEL, ...) bare when rows end in LF, and a
    reader then splits the row there.
    """
    text = str(value)
    if _CSV_SPECIAL.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    """CSV text, one ``\\n``-ended line per row, every field quoted as ``csv_field`` says."""
    return "".join(",".join(csv_field(v) for v in row) + "\n" for row in rows)


def _console(stream: Any) -> Console:
    return Console(file=stream, soft_wrap=True, highlight=False)


def _default(obj: Any) -> Any:
    """JSON for the numpy scalars and paths that results carry."""
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


@dataclass
class Output:
    """Where a command's results and messages go, by mode."""

    mode: str = HUMAN
    # Bound at construction, so CliRunner's captured streams are the ones written to.
    stdout: Console = field(default_factory=lambda: _console(sys.stdout))
    stderr: Console = field(default_factory=lambda: _console(sys.stderr))

    @classmethod
    def from_flags(cls, *, json_output: bool = False, quiet: bool = False) -> Output:
        return cls(JSON if json_output else QUIET if quiet else HUMAN)

    @property
    def is_json(self) -> bool:
        return self.mode == JSON

    def result(self, payload: Any, human: Callable[[Console], None] | None = None) -> None:
        """The command's answer: JSON in json mode, else what ``human`` renders."""
        if self.mode == JSON:
            sys.stdout.write(json.dumps(payload, default=_default, indent=2) + "\n")
        elif human is not None:
            human(self.stdout)
        sys.stdout.flush()

    def lines(self, lines: Iterable[str], *, terminator: str = "\n") -> None:
        """Plain result lines (URIs, JSON lines) on stdout, each ended by ``terminator``."""
        write = sys.stdout.write
        for line in lines:
            write(line + terminator)
        sys.stdout.flush()

    def text(self, text: str) -> None:
        """Result text written as is (a CSV document) on stdout."""
        sys.stdout.write(text)
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """A human note on stderr (silenced by --quiet)."""
        if self.mode != QUIET:
            self.stderr.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        if self.mode != QUIET:
            self.stderr.print(f"alcli: warning: {message}", markup=False, style="yellow")

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr; yields ``advance(n)``. Silent unless stderr is a terminal."""
        if self.mode == QUIET or not self.stderr.is_terminal or not total:
            yield lambda n: None
            return
        from rich.progress import (  # only for a terminal: kept off a piped command's start
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.stderr, transient=True) as bar:
            task = bar.add_task(description, total=total, rate="")
            elapsed = bar.tasks[0]

            def advance(n: int) -> None:
                bar.advance(task, n)
                speed = elapsed.speed
                bar.update(task, rate=f"{speed:,.0f} items/s" if speed else "")

            yield advance
