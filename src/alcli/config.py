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
anywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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
    }
)


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


def defaults_for(
    config: Mapping[str, Any], command: str, params: Mapping[str, str], base: Path
) -> dict[str, Any]:
    """The ``default_map`` for one command: top-level keys it knows, then its own table.

    ``params`` maps config keys (option names without dashes, ``-`` as ``_``: ``eval``,
    ``image_size``) to the command's parameter names. Top-level keys a command does not have
    are ignored (they belong to other commands); an unknown key inside the command's own
    table is an error with a suggestion.
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
        if name not in params:
            close = difflib.get_close_matches(name, sorted(params), n=1)
            hint = f"did you mean '{close[0]}'?" if close else None
            raise UsageError(f"config: [{command}] has no option '{key}'", hint=hint)
        out[name] = value
    return {params[k]: (_resolve_path(v, base) if k in PATH_KEYS else v) for k, v in out.items()}


def config_keys(option_names: Iterable[str], param_name: str) -> list[str]:
    """The config keys of one parameter: its long option names, and the parameter name."""
    keys = [_normalise(o.lstrip("-")) for o in option_names if o.startswith("--")]
    return [*keys, param_name]
