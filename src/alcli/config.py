"""Options from a config file: ``alcli.toml`` in the working directory, or ``--config FILE``.

The paper's configuration-as-a-service idea, done the Click way: the file becomes the
command's ``default_map``, so the command line always wins and every option can live in the
file, the pool and labels files included. Layout::

    pool = "data/mnist/train"        # top-level keys apply to every command that has them
    model = "mobilenet_v2"
    [select]                         # a command's table overrides the top level for it
    strategy = "margin"
    labeled = "labels.csv"
    [auto]
    oracle = "labels.csv"

Relative paths in the file are relative to the file's folder, so a project folder works from
anywhere. Every key must be an option of some command (a ``[command]`` table's keys, options
of that command): a typo is an error naming the key and the file, never silently ignored.

Keys that run a program or talk to a server (``CONSENT_KEYS``: ``oracle-cmd``,
``endpoint-url``) are honoured only from a file the user named with ``--config``: an
``alcli.toml`` that merely sits in the working directory (someone else's folder, a cloned
repository) must not run a command on ``alcli auto``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import tomllib

from alcli.errors import UsageError

DEFAULT_CONFIG = "alcli.toml"

#: Keys whose values are paths or URIs, resolved against the config file's folder.
PATH_KEYS = frozenset(
    {
        "pool",
        "labeled",
        "oracle",
        "eval",
        "out",
        "cache_dir",
        "exclude",
        "probs",
        "embeddings",
        "uris",
        "resume",
        "document_root",
        "balance",
    }
)

#: Values of path keys that are words, not paths (``balance = "uniform"``).
NOT_PATHS = {"balance": frozenset({"uniform"})}


#: Keys that make alcli run a program or send requests somewhere, and what they do: only
#: honoured from a config file named explicitly (``--config FILE``).
CONSENT_KEYS = {"oracle_cmd": "runs a program", "endpoint_url": "sends requests to a server"}


def find_config(explicit: str | None, cwd: Path | None = None) -> Path | None:
    """The config to use: ``--config FILE`` (must exist), else ``./alcli.toml`` if present."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UsageError(f"config file not found: {explicit}")
        return path
    candidate = (cwd or Path.cwd()) / DEFAULT_CONFIG
    return candidate if candidate.is_file() else None


def load_config(path: Path) -> dict[str, Any]:
    """Parse a config file; a syntax error is a one-line usage error."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read config: {exc.strerror}") from exc


def _normalise(key: str) -> str:
    return key.replace("-", "_")


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or value == "-" or "://" in value or value.startswith("~"):
        return value
    path = Path(value)
    return value if path.is_absolute() else str(base / path)


def check_config(
    config: Mapping[str, Any], path: Path, commands: Mapping[str, Mapping[str, str]]
) -> None:
    """Every key of ``config`` names an option somewhere, or a ``UsageError`` names it.

    ``commands`` maps each command that reads the file to its config keys (see
    ``defaults_for``). A top-level key must belong to at least one command; a table must be
    a command's, and its keys that command's options.
    """
    every = {key for keys in commands.values() for key in keys}
    for key, value in config.items():
        if isinstance(value, dict):
            if key not in commands:
                _unknown(path, key, sorted(commands), what="table")
            for option in value:
                if _normalise(option) not in commands[key]:
                    _unknown(path, option, sorted(commands[key]), where=f" in [{key}]")
        elif key in commands:
            raise UsageError(f"{path}: [{key}] must be a table of {key}'s options")
        elif _normalise(key) not in every:
            _unknown(path, key, sorted(every))


def _unknown(
    path: Path, key: str, known: list[str], *, what: str = "key", where: str = ""
) -> NoReturn:
    close = difflib.get_close_matches(_normalise(key), known, n=1)
    hint = None
    if close:
        suggestion = close[0].replace("_", "-") if "-" in key else close[0]
        hint = f"did you mean '{suggestion}'?"
    raise UsageError(f"{path}: unknown {what} '{key}'{where}", hint=hint)


def defaults_for(
    config: Mapping[str, Any], command: str, params: Mapping[str, str], base: Path
) -> dict[str, Any]:
    """The ``default_map`` for one command: top-level keys it knows, then its own table.

    ``params`` maps config keys (option names without dashes, ``-`` as ``_``: ``eval``,
    ``image_size``) to the command's parameter names. Top-level keys a command does not have
    belong to other commands (``check_config`` has checked that some command has them).
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = _normalise(key)
        if isinstance(value, dict) or name not in params:
            continue
        out[name] = value
    table = config.get(command, {})
    if not isinstance(table, dict):
        raise UsageError(f"config: [{command}] must be a table")
    for key, value in table.items():
        name = _normalise(key)
        if name in params:
            out[name] = value
    return {
        params[k]: (
            _resolve_path(v, base) if k in PATH_KEYS and str(v) not in NOT_PATHS.get(k, ()) else v
        )
        for k, v in out.items()
    }


def config_keys(option_names: Iterable[str], param_name: str) -> list[str]:
    """The config keys of one parameter: its long option names, and the parameter name."""
    keys = [_normalise(o.lstrip("-")) for o in option_names if o.startswith("--")]
    return [*keys, param_name]
