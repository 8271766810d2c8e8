"""One output sink for every command: results to stdout, everything else to stderr.

Modes: ``human`` (rich tables and lines), ``json`` (one JSON document on stdout) and
``quiet`` (results only, no progress or notes). Keeping this in one place is what makes
``alcli select ... | xargs ...`` safe: nothing but results ever reaches stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

HUMAN, JSON, QUIET = "human", "json", "quiet"


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

    def lines(self, lines: Iterable[str]) -> None:
        """Plain result lines (URIs, CSV rows) on stdout, in every mode but json."""
        write = sys.stdout.write
        for line in lines:
            write(line + "\n")
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
