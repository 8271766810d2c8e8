"""The ``alcli`` command line: each command parses, calls the library, renders. No logic here.

One module per command (``embed``, ``select``, ``auto``, ``bench``, ``strategies``, ``cache``);
the options they share in ``_options``, the config file in ``_config``. Here: the Typer app,
and ``AlcliGroup.invoke``, the one place errors raised by the library become one-line
messages and exit codes (0 ok, 1 run failed, 2 bad usage or bad input, 130 interrupted).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from alcli import __version__
from alcli.cli import auto, bench, cache, embed, select, strategies
from alcli.cli._options import State
from alcli.errors import AlcliError

__all__ = ["AlcliGroup", "app", "main"]


def _wants_debug(ctx: typer.Context) -> bool:
    state = ctx.obj if isinstance(ctx.obj, State) else None
    raw = [*sys.argv[1:], *ctx.args]
    return bool(state and state.debug) or "--debug" in raw or bool(os.environ.get("ALCLI_DEBUG"))


def _fail(message: str, code: int, *, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"alcli: {message}", err=True)
    raise typer.Exit(code)


def _reader_went_away() -> NoReturn:
    """stdout's reader closed early (``alcli select ... | head``): stop quietly, as ``yes`` does.

    Exit 141 (128 + SIGPIPE), what a shell reports for a tool killed by SIGPIPE; stdout goes
    to /dev/null first so the interpreter's final flush cannot raise again.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(128 + 13)


class AlcliGroup(TyperGroup):
    """Typer group (which already suggests misspelled commands) with one exception mapping."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except typer.TyperException as exc:  # Click's usage errors: bad option, missing value
            sub = getattr(exc, "ctx", None)
            where = sub.command_path if sub is not None else "alcli"
            _fail(
                f"error: {exc.format_message()} (see '{where} --help')",
                getattr(exc, "exit_code", 2),
                debug=_wants_debug(ctx),
            )
        except AlcliError as exc:
            _fail(f"error: {exc}", exc.exit_code, debug=_wants_debug(ctx))
        except KeyboardInterrupt:
            _fail("interrupted (everything computed so far is saved)", 130, debug=False)
        except BrokenPipeError:
            _reader_went_away()
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            target = f": {exc.filename}" if exc.filename else ""
            _fail(f"error: {exc.strerror or exc}{target}", 2, debug=_wants_debug(ctx))
        except Exception as exc:
            message = f"internal error: {type(exc).__name__}: {exc}"
            _fail(f"{message} (rerun with --debug for the traceback)", 1, debug=_wants_debug(ctx))


app = typer.Typer(
    cls=AlcliGroup,
    name="alcli",
    help="Active learning on large image pools: which items should we label next?",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(embed.embed)
app.command()(select.select)
app.command()(auto.auto)
app.command()(bench.bench)
app.command()(strategies.strategies)
app.add_typer(cache.cache_app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"alcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Active learning on large image pools: which items should we label next?"""
    ctx.obj = State()
    _pass_names_through()


def _pass_names_through() -> None:
    """File names are bytes; one that is not UTF-8 lives in Python as a str with surrogate
    escapes (PEP 383). Decode stdin (``alcli embed -``) and encode stdout (``select``'s URIs)
    the same way, so such a name goes in and comes out as its own bytes instead of failing
    the run. JSON output escapes it visibly (``\\udcff``) and ``json.loads`` gives it back."""
    for stream in (sys.stdin, sys.stdout):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(ValueError, OSError):  # a closed or odd stream: leave it
                reconfigure(errors="surrogateescape")


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="alcli")
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_went_away()
