"""``alcli.toml`` / ``--config FILE`` as a command's defaults, and the consent rule.

The file becomes the command's Click ``default_map`` (see ``alcli.config``), so the command
line always wins. Keys that run a program or talk to a server (``CONSENT_KEYS``) are used
only from a file the user named: an ``alcli.toml`` found in someone else's folder must not
run their command on ``alcli auto``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from alcli.config import (
    CONSENT_KEYS,
    check_config,
    config_keys,
    defaults_for,
    find_config,
    load_config,
)
from alcli.errors import UsageError

_CONFIG_META = "alcli.config"


@dataclass(frozen=True)
class ConfigSource:
    """Where this command's defaults came from, and which of them need the user's consent."""

    path: str
    explicit: bool  # named with --config, not found in the working directory
    consent: dict[str, str]  # parameter name -> config key, for CONSENT_KEYS the file sets


def _config_names(command: Any) -> dict[str, str]:
    """A command's config keys (``image_size``, ``image-size`` as ``image_size``) -> params."""
    return {
        key: p.name
        for p in command.params
        if p.name
        for key in config_keys(getattr(p, "opts", []), p.name)
    }


def load_config_defaults(
    ctx: typer.Context, param: typer.CallbackParam, value: str | None
) -> str | None:
    """Eager: turn alcli.toml / --config into this command's defaults before other options.

    The whole file is checked against every command that reads it, so a typo anywhere in it
    stops the command before any work.
    """
    path = find_config(value)
    if path is not None:
        group = ctx.parent.command if ctx.parent is not None else None
        siblings = getattr(group, "commands", {}) or {ctx.info_name or "": ctx.command}
        commands = {
            name: _config_names(command)
            for name, command in siblings.items()
            if any(p.name == "config" for p in command.params)
        }
        names = commands.get(ctx.info_name or "") or _config_names(ctx.command)
        config = load_config(path)
        check_config(config, path, commands)
        defaults = defaults_for(config, ctx.info_name or "", names, path.parent)
        ctx.default_map = {**defaults, **(ctx.default_map or {})}
        consent = {names[key]: key for key in CONSENT_KEYS if names.get(key) in defaults}
        oracle = names.get("oracle")
        if oracle in defaults and str(defaults[oracle]).startswith("label-studio:"):
            consent[oracle] = "oracle"  # it would send LABEL_STUDIO_API_KEY to that server
        ctx.meta[_CONFIG_META] = ConfigSource(str(path), value is not None, consent)
    return value


#: Why each key needs consent: CONSENT_KEYS, and an oracle on a Label Studio server.
_CONSENT_WHY = {**CONSENT_KEYS, "oracle": "sends the Label Studio API token to a server"}


def check_consent(ctx: typer.Context) -> None:
    """A program or server named only by an alcli.toml found in the working directory does
    not run: someone else's folder must not run their command on ``alcli auto``."""
    source = ctx.meta.get(_CONFIG_META)
    if not isinstance(source, ConfigSource) or source.explicit:
        return
    for name, key in source.consent.items():
        # Compared by name: Typer ships its own copy of Click's ParameterSource.
        if getattr(ctx.get_parameter_source(name), "name", None) == "DEFAULT_MAP":
            option = key.replace("_", "-")
            raise UsageError(
                f"{source.path} sets {option}, which {_CONSENT_WHY.get(key, '')}; not used from a "
                "config file found in the working directory",
                hint=f"to allow it, pass --config {source.path}, or give --{option} yourself",
            )
