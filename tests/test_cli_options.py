"""The options commands share: defined once (``alcli.cli._options``), taken by every command
after its name as before, and ``import alcli.cli`` loads no numpy, torch, rich or library."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from alcli import __version__
from alcli.cli import app
from alcli.cli._options import flag_groups

COMMANDS = [
    ["embed"],
    ["select"],
    ["auto"],
    ["bench"],
    ["strategies"],
    ["cache", "info"],
    ["cache", "verify"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_lists_the_output_flags(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    for flag in ("--json", "--quiet", "--debug"):
        assert flag in result.stdout


def test_output_flags_go_after_the_command_name(runner: CliRunner) -> None:
    """Click takes a group's options only before the command; users type them after it."""
    after = runner.invoke(app, ["strategies", "margin", "--json"])
    assert after.exit_code == 0, after.output
    assert [row["name"] for row in json.loads(after.stdout)] == ["margin"]
    quiet = runner.invoke(app, ["strategies", "-q", "margin"])
    assert quiet.exit_code == 0
    assert quiet.stdout.split()[:2] == ["name", "family"]
    before = runner.invoke(app, ["--json", "strategies"])
    assert before.exit_code == 2
    assert "No such option: --json" in before.output


def test_import_stays_light() -> None:
    """A command pays for numpy, torch, rich and the library modules only when it runs."""
    heavy = (
        "numpy",
        "torch",
        "rich.console",
        "alcli.embedding",
        "alcli.selection",
        "alcli.autorun",
    )
    code = f"import sys, alcli.cli; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]"


def test_python_dash_m_alcli_cli_still_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alcli.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == f"alcli {__version__}"


@dataclass(frozen=True)
class _Clash:
    model: Annotated[str, typer.Option("--other-model")] = "x"


def _command(*, model: str = "y", clash: _Clash) -> None:
    """Two options named ``model``: Typer would silently keep one."""


def test_a_group_option_named_like_another_is_refused() -> None:
    with pytest.raises(TypeError, match="named twice"):
        inspect.signature(flag_groups(_command))
