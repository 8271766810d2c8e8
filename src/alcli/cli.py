"""The ``alcli`` command line: each command parses, calls the library, renders. No logic here.

Errors raised by the library are turned into one-line messages and exit codes in one place,
``AlcliGroup.invoke`` (0 ok, 1 run failed, 2 bad usage or bad input, 130 interrupted).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from alcli import __version__
from alcli.config import (
    CONSENT_KEYS,
    check_config,
    config_keys,
    defaults_for,
    find_config,
    load_config,
)
from alcli.errors import AlcliError, UsageError
from alcli.output import QUIET, Output, csv_text, one_per_line

if TYPE_CHECKING:  # numpy and the pipeline load with the command that needs them: fast --help
    import numpy as np

    from alcli.embedding import EmbedOptions, EmbedResult
    from alcli.sources import Pool

# ---------------------------------------------------------------------------------------------
# The group: one place for "did you mean" and for exceptions -> messages and exit codes.


@dataclass
class State:
    """Per-invocation settings that the error handler needs to see."""

    debug: bool = False


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


# ---------------------------------------------------------------------------------------------
# Shared options (defined once, used by every command).


@dataclass(frozen=True)
class ConfigSource:
    """Where this command's defaults came from, and which of them need the user's consent."""

    path: str
    explicit: bool  # named with --config, not found in the working directory
    consent: dict[str, str]  # parameter name -> config key, for CONSENT_KEYS the file sets


_CONFIG_META = "alcli.config"


def _config_names(command: Any) -> dict[str, str]:
    """A command's config keys (``image_size``, ``image-size`` as ``image_size``) -> params."""
    return {
        key: p.name
        for p in command.params
        if p.name
        for key in config_keys(getattr(p, "opts", []), p.name)
    }


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
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
        ctx.meta[_CONFIG_META] = ConfigSource(str(path), value is not None, consent)
    return value


def _check_consent(ctx: typer.Context) -> None:
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
                f"{source.path} sets {option}, which {CONSENT_KEYS[key]}; not used from a "
                "config file found in the working directory",
                hint=f"to allow it, pass --config {source.path}, or give --{option} yourself",
            )


ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        callback=_load_config,
        is_eager=True,
        help="Options file (default: ./alcli.toml if present). The command line wins. "
        "oracle-cmd and endpoint-url are used only from a file named here.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output: JSON on stdout.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Results only: no progress or notes.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
PoolArg = Annotated[
    str | None,
    typer.Argument(
        help="Directory, glob, fsspec URI (s3://...), manifest (.txt/.csv/.jsonl) or - for stdin.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str, typer.Option("--model", help="Any torchvision classification model name.")
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="Weights enum name (default: the model's default), 'none', or a checkpoint file.",
    ),
]
ImageSizeOpt = Annotated[
    int | None, typer.Option("--image-size", min=8, help="Input resolution override (pixels).")
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")]
IoThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--io-threads", min=1, help="Reads in flight (default: 16 for remote pools, 2 for local)."
    ),
]
DecodeThreadsOpt = Annotated[
    int, typer.Option("--decode-threads", min=1, help="Decode/preprocess threads.")
]
ModelStreamsOpt = Annotated[
    int | None,
    typer.Option(
        "--model-streams",
        min=1,
        help="Model threads running batches side by side (default: 1 on a GPU, one per "
        "torch thread on the CPU, up to 4).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
ItemTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--item-timeout",
        min=0.0,
        help="Seconds one item's read may take, retries included; past it the item is "
        "skipped (0: no limit).",
    ),
]
CacheDirOpt = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        envvar="ALCLI_CACHE_DIR",
        help="Embedding cache folder (default: $XDG_CACHE_HOME/alcli).",
    ),
]
ContentHashOpt = Annotated[
    bool, typer.Option("--content-hash", help="Key the cache on file bytes, not metadata.")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="S3-compatible endpoint (else from the AWS config)."),
]
AnonOpt = Annotated[bool, typer.Option("--anon", help="Anonymous access to object stores.")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="AWS profile for s3:// pools.")]


def _begin(ctx: typer.Context, *, json_output: bool, quiet: bool, debug: bool) -> Output:
    """Record --debug for the error handler, check consent for the config, build the sink."""
    if isinstance(ctx.obj, State):
        ctx.obj.debug = debug
    _check_consent(ctx)
    return Output.from_flags(json_output=json_output, quiet=quiet)


def _require_pool(pool: str | None) -> str:
    if not pool:
        raise UsageError("no POOL given", hint="pass it as an argument or set pool in alcli.toml")
    return pool


def _storage_options(endpoint_url: str | None, anon: bool, profile: str | None) -> dict[str, Any]:
    from alcli.sources import s3_options

    return s3_options(endpoint_url=endpoint_url, profile=profile, anon=anon)


# ---------------------------------------------------------------------------------------------
# Commands.


@app.command()
def embed(
    ctx: typer.Context,
    pool: PoolArg = None,
    model: ModelOpt = "mobilenet_v2",
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    io_threads: IoThreadsOpt = None,
    decode_threads: DecodeThreadsOpt = 2,
    model_streams: ModelStreamsOpt = None,
    device: DeviceOpt = "cpu",
    item_timeout: ItemTimeoutOpt = 60.0,
    cache_dir: CacheDirOpt = None,
    content_hash: ContentHashOpt = False,
    endpoint_url: EndpointOpt = None,
    anon: AnonOpt = False,
    profile: ProfileOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run the pipeline over every item of POOL not yet cached."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    options = _embed_options(
        model, weights, image_size, batch_size, io_threads, decode_threads, device, model_streams
    )
    options.item_timeout = item_timeout or None
    storage = _storage_options(endpoint_url, anon, profile)
    result = _embed_for(
        out, _resolve(pool, cache_dir, content_hash, storage), options, cache_dir, collect=False
    )
    summary = result.summary()
    out.note(
        f"{summary['items']:,} items: {summary['cached']:,} cached, {summary['embedded']:,} "
        f"embedded, {summary['failed']:,} failed in {summary['seconds']:.2f} s "
        f"({summary['items_per_s'] or 0:,.0f} items/s)"
    )
    out.result(summary)


FORMATS = ("uris", "csv", "jsonl")


@app.command()
def select(
    ctx: typer.Context,
    pool: PoolArg = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="A name from 'alcli strategies'.")
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", "-b", min=1, help="How many items to pick.")
    ] = None,
    labeled: Annotated[
        str | None, typer.Option("--labeled", "-l", help="Labels so far: CSV with uri,label.")
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option("--exclude", help="URIs never to pick (one per line, or CSV with uri)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for every random choice.")] = 0,
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="uris (one per line), csv or jsonl.")
    ] = "uris",
    print0: Annotated[
        bool,
        typer.Option(
            "--print0", "-0", help="uris separated by NUL, not newline (for xargs -0), like find."
        ),
    ] = False,
    probs: Annotated[
        str | None,
        typer.Option("--probs", help="Bring your own model: class probabilities .npy [n, C]."),
    ] = None,
    embeddings: Annotated[
        str | None,
        typer.Option("--embeddings", help="Bring your own embeddings: .npy [n, d]."),
    ] = None,
    uris: Annotated[
        str | None,
        typer.Option("--uris", help="Names of the rows of --probs/--embeddings (else indices)."),
    ] = None,
    model: ModelOpt = "mobilenet_v2",
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    io_threads: IoThreadsOpt = None,
    decode_threads: DecodeThreadsOpt = 2,
    model_streams: ModelStreamsOpt = None,
    device: DeviceOpt = "cpu",
    item_timeout: ItemTimeoutOpt = 60.0,
    cache_dir: CacheDirOpt = None,
    content_hash: ContentHashOpt = False,
    endpoint_url: EndpointOpt = None,
    anon: AnonOpt = False,
    profile: ProfileOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Pick the next BUDGET items of POOL to label, with STRATEGY; prints their URIs."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    if not strategy:
        raise UsageError("no --strategy given", hint="see 'alcli strategies'")
    if budget is None:
        raise UsageError("no --budget given", hint="how many items to pick, e.g. --budget 1000")
    if output_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not '{output_format}'")
    if print0 and (json_output or output_format != "uris"):
        raise UsageError("--print0 separates plain URIs; it does not go with --json or --format")
    from alcli import selection

    # Everything that needs no embedding is checked first: a typo costs milliseconds. The
    # name and needs before any file is read or bucket listed; the labels against the pool
    # once it is resolved (a listing), before a single image is read.
    own_arrays = bool(probs or embeddings)
    has_embeddings = bool(embeddings) or not own_arrays
    selection.check_inputs(
        strategy, probs=bool(probs), embeddings=has_embeddings, n_labeled=1 if labeled else 0
    )
    # Rows named by index (own arrays, no --uris) are matched as written, not as paths.
    labels = _read_labels(labeled, normalize=bool(uris) or not own_arrays)
    excluded = selection.read_uri_list(exclude) if exclude else []
    skipped: dict[str, str] = {}
    if own_arrays:
        names, prob_arr, emb_arr = _own_arrays(probs, embeddings, uris)
        to_embed = None
    else:
        storage = _storage_options(endpoint_url, anon, profile)
        to_embed = _resolve(pool, cache_dir, content_hash, storage)
        names, prob_arr, emb_arr = to_embed.uris, None, None
    selection.check_request(
        strategy,
        uris=names,
        labels=labels,
        exclude=excluded,
        probs=prob_arr is not None,
        embeddings=has_embeddings,
    )
    if to_embed is not None:
        options = _embed_options(
            model,
            weights,
            image_size,
            batch_size,
            io_threads,
            decode_threads,
            device,
            model_streams,
        )
        options.item_timeout = item_timeout or None
        result = _embed_for(out, to_embed, options, cache_dir)
        names, emb_arr = result.uris, result.embeddings
        skipped = {failure.uri: failure.reason for failure in result.failures}
    picks = selection.pick(
        strategy=strategy,
        budget=budget,
        uris=names,
        probs=prob_arr,
        embeddings=emb_arr,
        labels=labels,
        exclude=excluded,
        seed=seed,
        skipped=skipped,
    )
    if picks.labeled_skipped:
        uri, reason = next(iter(picks.labeled_skipped.items()))
        out.warn(
            f"{len(picks.labeled_skipped)} labeled items were skipped and are left out "
            f"(e.g. {uri}: {reason})"
        )
    terminator = "\0" if print0 else "\n"
    if output_format == "uris" and not out.is_json:
        one_per_line(picks.uris, terminator)  # before anything is written: all or nothing
    out.note(
        f"{picks.strategy}: picked {len(picks.rows):,} of {picks.n_pool:,} items "
        f"({picks.n_labeled:,} labeled, {picks.n_excluded:,} excluded)"
    )
    if out.is_json:
        out.result(picks.summary())
    elif output_format == "uris":
        out.lines(picks.uris, terminator=terminator)
    elif output_format == "csv":
        out.text(_csv_text(picks.records()))
    else:
        out.lines(json.dumps(record) for record in picks.records())


def _csv_text(records: list[dict[str, Any]]) -> str:
    """rank,uri,score rows, quoted as CSV needs (URIs may hold commas, quotes, line breaks)."""
    rows = ((r["rank"], r["uri"], "" if r["score"] is None else repr(r["score"])) for r in records)
    return csv_text([("rank", "uri", "score"), *rows])


def _read_labels(path: str | None, *, normalize: bool = True) -> dict[str, str]:
    if not path:
        return {}
    from alcli.oracle import load_labels_csv

    return load_labels_csv(path, normalize_uris=normalize)


def _own_arrays(
    probs: str | None, embeddings: str | None, uris: str | None
) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
    """Load the user's own arrays; rows are named by --uris, else by their index."""
    from alcli.selection import read_uri_list

    arrays = [
        _load_npy(path, flag) if path else None
        for path, flag in ((probs, "--probs"), (embeddings, "--embeddings"))
    ]
    rows = {a.shape[0] for a in arrays if a is not None}
    if len(rows) != 1:
        raise UsageError(f"--probs and --embeddings disagree on the number of rows: {sorted(rows)}")
    n = rows.pop()
    names = read_uri_list(uris) if uris else [str(i) for i in range(n)]
    if len(names) != n:
        raise UsageError(f"--uris names {len(names):,} rows but the arrays have {n:,}")
    return names, arrays[0], arrays[1]


def _load_npy(path: str, flag: str) -> np.ndarray:
    import numpy as np

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{flag}: file not found: {path}") from None
    except ValueError as exc:
        raise UsageError(f"{flag}: not a .npy array file: {path} ({exc})") from None
    if arr.ndim != 2:
        raise UsageError(f"{flag}: expected a 2-D array, got shape {arr.shape}")
    return np.asarray(arr)


def _embed_options(
    model: str,
    weights: str | None,
    image_size: int | None,
    batch_size: int,
    io_threads: int | None,
    decode_threads: int,
    device: str,
    model_streams: int | None = None,
) -> EmbedOptions:
    from alcli.embedding import EmbedOptions

    return EmbedOptions(
        model, weights, image_size, batch_size, io_threads, decode_threads, device, model_streams
    )


def _resolve(
    pool: str | None, cache_dir: str | None, content_hash: bool, storage_options: dict[str, Any]
) -> Pool:
    """POOL as items: cheap (a listing, no image read), so requests are checked against it."""
    from alcli.cache import manifest_memo_dir
    from alcli.sources import resolve_pool

    return resolve_pool(
        _require_pool(pool),
        content_hash=content_hash,
        storage_options=storage_options,
        stdin=sys.stdin,
        memo_dir=manifest_memo_dir(cache_dir),
    )


def _embed_for(
    out: Output, resolved: Pool, options: EmbedOptions, cache_dir: str | None, collect: bool = True
) -> EmbedResult:
    """Embed what the cache lacks (embed, select and auto), with progress and notes."""
    from alcli.embedding import embed as embed_pool

    with out.progress("embedding", len(resolved.items)) as advance:
        result = embed_pool(
            resolved, options=options, cache=cache_dir, progress=advance, collect=collect
        )
    if resolved.duplicates:
        out.warn(f"{len(resolved.duplicates)} duplicate URIs dropped (first kept)")
    if resolved.skipped:
        out.warn(f"{len(resolved.skipped)} entries ignored (first: {resolved.skipped[0]})")
    for failure in result.failures[:5]:
        out.warn(f"skipped {failure.uri}: {failure.reason}")
    if len(result.failures) > 5:
        out.warn(f"... and {len(result.failures) - 5} more skipped (see 'alcli embed --json')")
    return result


@app.command()
def auto(
    ctx: typer.Context,
    pool: PoolArg = None,
    oracle: Annotated[
        str | None,
        typer.Option(
            "--oracle",
            help="Who labels: a uri,label CSV (simulation) or dir:PATH (humans, via files).",
        ),
    ] = None,
    oracle_cmd: Annotated[
        str | None,
        typer.Option("--oracle-cmd", help="A program: URIs on stdin, uri,label lines out."),
    ] = None,
    oracle_timeout: Annotated[
        float, typer.Option("--oracle-timeout", min=0.1, help="Seconds per --oracle-cmd call.")
    ] = 600.0,
    target_acc: Annotated[
        float | None,
        typer.Option("--target-acc", min=0.0, max=1.0, help="Stop at this eval accuracy."),
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", "-b", min=1, help="Most labels to buy, in all.")
    ] = None,
    eval_file: Annotated[
        str | None,
        typer.Option("--eval", help="Labeled eval items: uri,label CSV (in the pool or not)."),
    ] = None,
    eval_frac: Annotated[
        float | None,
        typer.Option("--eval-frac", help="Hold out this fraction of the pool, labeled once."),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option("--strategies", help="Comma-separated candidates (default: a mixed set)."),
    ] = None,
    initial: Annotated[
        int, typer.Option("--initial", min=1, help="Random labels to pre-train on.")
    ] = 100,
    round_size: Annotated[
        int, typer.Option("--round-size", min=1, help="Labels bought per round.")
    ] = 100,
    spend: Annotated[
        str,
        typer.Option("--spend", help="shared (R per round, split) or paper (R per strategy)."),
    ] = "shared",
    seed: Annotated[int, typer.Option("--seed", help="Seed for every random choice.")] = 0,
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="Run folder (state, labeled.csv, report). Default: new."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Continue the run saved in this folder."),
    ] = None,
    model: ModelOpt = "mobilenet_v2",
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    io_threads: IoThreadsOpt = None,
    decode_threads: DecodeThreadsOpt = 2,
    model_streams: ModelStreamsOpt = None,
    device: DeviceOpt = "cpu",
    item_timeout: ItemTimeoutOpt = 60.0,
    cache_dir: CacheDirOpt = None,
    content_hash: ContentHashOpt = False,
    endpoint_url: EndpointOpt = None,
    anon: AnonOpt = False,
    profile: ProfileOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Label until the target accuracy or the budget, choosing the strategy as it goes (PSHEA)."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    from alcli import agent, autorun

    if resume:
        settings = agent.saved_config(resume)
        folder = resume
    else:
        if target_acc is None or budget is None:
            raise UsageError(
                "auto needs --target-acc and --budget", hint="e.g. --target-acc 0.8 --budget 5000"
            )
        settings = autorun.auto_config(
            target_acc=target_acc,
            budget=budget,
            candidates=candidates,
            initial=initial,
            round_size=round_size,
            spend=spend,
            seed=seed,
            eval_frac=eval_frac,
        )
        folder = out_dir or autorun.new_run_dir()
    # Everything that needs no embedding is checked first: a typo costs milliseconds.
    autorun.check_run_dir(folder, resume=bool(resume))
    labeler = autorun.make_oracle(oracle, oracle_cmd, timeout_s=oracle_timeout)
    if eval_file is None and settings.eval_frac is None:
        raise UsageError("no evaluation set", hint="give --eval FILE (labeled) or --eval-frac F")
    eval_labels = autorun.read_eval(eval_file) if eval_file is not None else None
    autorun.check_classes(labeler, eval_labels)
    options = _embed_options(
        model, weights, image_size, batch_size, io_threads, decode_threads, device, model_streams
    )
    options.item_timeout = item_timeout or None
    storage = _storage_options(endpoint_url, anon, profile)
    resolved = _resolve(pool, cache_dir, content_hash, storage)
    autorun.check_coverage(labeler, resolved.uris)
    result = _embed_for(out, resolved, options, cache_dir)
    evaluation = None
    if eval_file is not None and eval_labels is not None:
        evaluation = autorun.eval_set(
            eval_file,
            eval_labels,
            result,
            options=options,
            cache_dir=cache_dir,
            storage_options=storage,
        )
    uris, embeddings = autorun.askable(labeler, result.uris, result.embeddings, warn=out.warn)
    watch = autorun.ClassWatch(labeler, evaluation, folder)
    out.note(f"run folder: {folder}")

    def on_round(summary: Any) -> None:
        gone = f", eliminated {summary.eliminated}" if summary.eliminated else ""
        out.note(
            f"round {summary.round}: best accuracy {summary.best_accuracy:.4f}, "
            f"{summary.labels_bought:,} labels bought, alive {', '.join(summary.alive)}{gone}"
        )
        watch.check()  # labels in another vocabulary than the eval set's: stop now

    try:
        report = agent.run_auto(
            uris,
            embeddings,
            watch,
            settings,
            out_dir=folder,
            eval_set=evaluation,
            resume=bool(resume),
            progress=on_round,
        )
    except autorun.PendingLabels as pending:
        # Not a failure: humans label the batch, then `alcli auto --resume` goes on.
        message = (
            f"waiting for labels: fill {pending.labels_path}, "
            f"then run 'alcli auto --resume {folder}'"
        )
        out.note(message)
        out.result(
            {
                "status": "waiting_for_labels",
                "batch": str(pending.batch_path),
                "labels": str(pending.labels_path),
                "resume": f"alcli auto --resume {folder}",
            }
        )
        return
    out.result(report.as_dict(), lambda console: autorun.render_report(report, console))


@app.command()
def bench(
    ctx: typer.Context,
    pool: PoolArg = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Measure on the pool's first N items.")
    ] = 256,
    rounds: Annotated[
        int,
        typer.Option("--rounds", min=1, help="Cold pipeline, model-only, plain-loop rounds."),
    ] = 1,
    strategies: Annotated[
        str | None,
        typer.Option(
            "--strategies",
            help="Strategies to time at the pool's size: names, globs or families, comma "
            "separated, or 'all' (default: margin,entropy,coreset,kmeans,badge,dbal).",
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            "--budget", "-b", min=1, help="Picks per strategy (default: 1% of the pool, 10-10,000)."
        ),
    ] = None,
    no_strategies: Annotated[
        bool, typer.Option("--no-strategies", help="Time the pipeline only.")
    ] = False,
    model: ModelOpt = "mobilenet_v2",
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    io_threads: IoThreadsOpt = None,
    decode_threads: DecodeThreadsOpt = 2,
    model_streams: ModelStreamsOpt = None,
    device: DeviceOpt = "cpu",
    endpoint_url: EndpointOpt = None,
    anon: AnonOpt = False,
    profile: ProfileOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    config: ConfigOpt = None,
) -> None:
    """How fast alcli embeds POOL here, against a plain loop, where the time goes, and what
    each strategy costs at POOL's size (your cache is not touched)."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    from alcli.bench import DEFAULT_STRATEGIES, run_bench

    if no_strategies and strategies:
        raise UsageError("--strategies and --no-strategies contradict each other")
    options = _embed_options(
        model, weights, image_size, batch_size, io_threads, decode_threads, device, model_streams
    )
    report = run_bench(
        _require_pool(pool),
        options=options,
        limit=limit,
        rounds=rounds,
        strategies=None if no_strategies else (strategies or DEFAULT_STRATEGIES),
        budget=budget,
        storage_options=_storage_options(endpoint_url, anon, profile),
        stdin=sys.stdin,
        progress=out.note,
    )
    data = report.as_dict()
    if out.mode == QUIET:
        out.lines([str(data["pipeline_ips"])])  # the key number: items/s a large pool runs at
    else:
        out.result(data, lambda console: _render_bench(data, console))


def _render_bench(data: dict[str, Any], console: Any) -> None:
    """The bench report as small tables (speeds, stages, strategies) and a few lines (stdout)."""
    from rich.table import Table

    settings, machine, seconds = data["settings"], data["machine"], data["seconds"]
    console.print(
        f"{data['items']:,} of {data['pool_items']:,} items of {data['pool']}: "
        f"{settings['model']} ({settings['weights'] or 'default weights'}), "
        f"{settings['image_size']} px, batch {settings['batch_size']}, {machine['device']}",
        markup=False,
    )
    bound = data["model_only_ips"]
    speeds = Table(box=None, header_style="bold", pad_edge=False)
    speeds.add_column("measure", no_wrap=True)
    speeds.add_column("items/s", justify="right")
    speeds.add_column("vs bound", justify="right")
    for name, ips, vs_bound in (
        ("model only (bound)", bound, True),
        ("pipeline, cold", data["pipeline_ips"], True),
        ("embed call, cold", data["cold_ips"], True),
        ("embed call, warm", data["warm_ips"], False),
        ("plain sequential loop", data["sequential_ips"], True),
    ):
        speeds.add_row(name, f"{ips:,.1f}", f"{ips / bound:.2f}" if vs_bound and bound else "-")
    console.print(speeds)
    stages = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("stage", "threads", "busy s", "busy share", "items/busy s"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for name, stage in data["stages"].items():
        stages.add_row(
            name,
            str(stage.get("threads", "")),
            f"{stage.get('busy_s', 0.0):.2f}",
            f"{stage.get('utilization', 0.0):.0%}",
            f"{stage.get('items_per_busy_s', 0.0):,.0f}",
        )
    console.print(stages)
    lines = [
        f"model build {seconds['model_build']:.2f} s, {seconds['model_build_waited']:.2f} s "
        "of it not hidden behind the first reads and decodes",
        f"listing {seconds['list']:.2f} s, fixed per call {seconds['fixed']:.2f} s (cache "
        f"writes, ...); the whole pool, cold: about {_duration(seconds['estimate_cold_pool'])}",
        f"pipeline vs plain sequential loop (read, decode, infer one batch at a time; torch "
        f"threads {settings['sequential_torch_threads']}): {data['pipeline_vs_sequential']:.2f}x",
        f"threads: io {settings['io_threads']}, decode {settings['decode_threads']}, torch "
        f"{machine['torch_threads']} x {machine['model_streams']} model streams (of "
        f"{machine['cores']} cores); load average "
        f"{', '.join(map(str, machine['load_average'])) or 'n/a'}",
    ]
    if data["failed"]:
        kinds = ", ".join(f"{kind} {count}" for kind, count in data["failure_reasons"].items())
        lines.append(f"failed: {data['failed']:,} of {data['items']:,} ({kinds})")
        lines.extend(f"  {f['uri']}: {f['reason']}" for f in data["failures"][:3])
    lines.append(f"hint: {data['hint']}")
    for line in lines:
        console.print(line, markup=False)
    if "strategies" in data:
        _render_strategies(data["strategies"], console)


def _render_strategies(bench: dict[str, Any], console: Any) -> None:
    """What each strategy costs at the pool's size: a table and what it was measured on."""
    from rich.table import Table

    estimate = bench["estimate"]
    console.print(
        f"strategies: budget {bench['budget']:,} from {bench['pool_items']:,} x {bench['dim']:,}"
        + (f" (timed on {bench['strategy_rows']:,} rows)" if estimate else ""),
        markup=False,
    )
    view = Table(box=None, header_style="bold", pad_edge=False)
    view.add_column("strategy", no_wrap=True)
    if estimate:
        view.add_column(f"s at {bench['strategy_rows']:,}", justify="right")
    view.add_column("s, est. for pool" if estimate else "seconds", justify="right")
    view.add_column("peak +MiB", justify="right")
    for row in bench["results"]:
        if row["error"] is not None:
            cells = ["-"] * (2 if estimate else 1) + ["-"]
            view.add_row(row["name"], *cells)
            continue
        timed = [f"{row['seconds']:,.3f}"] if estimate else []
        peak = row["peak_extra_mib"]
        view.add_row(
            row["name"],
            *timed,
            f"{row['pool_seconds']:,.3f}",
            "n/a" if peak is None else f"{peak:,.0f}",
        )
    console.print(view)
    console.print(bench["note"], markup=False)
    for row in bench["results"]:
        if row["error"] is not None:
            console.print(f"  {row['name']} failed: {row['error']}", markup=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@app.command()
def strategies(
    ctx: typer.Context,
    pattern: Annotated[
        str | None, typer.Argument(help="Glob on names or families, e.g. '*margin*'.")
    ] = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the strategy zoo: name, family, what it needs, cost, reference."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    import alcli.strategies as zoo

    found = zoo.available(pattern)
    if pattern and not found:
        raise UsageError(f"no strategy matches '{pattern}'", hint="run 'alcli strategies'")
    rows = [
        {
            "name": s.name,
            "family": s.family,
            "needs": sorted(s.needs),
            "cold_start": s.cold_start,
            "cost": s.cost,
            "aliases": list(s.aliases),
            "reference": s.reference,
            "summary": s.summary,
        }
        for s in found
    ]

    def table(console: Any) -> None:
        from rich.table import Table

        view = Table(box=None, header_style="bold", pad_edge=False)
        view.add_column("name", no_wrap=True, min_width=16)
        view.add_column("family", no_wrap=True, min_width=11)
        view.add_column("needs", no_wrap=True, min_width=24)
        view.add_column("cold", no_wrap=True, min_width=4)
        view.add_column("cost", overflow="ellipsis", no_wrap=True, max_width=24)
        view.add_column("reference", overflow="ellipsis", no_wrap=True, max_width=36)
        for row in rows:
            view.add_row(
                row["name"],
                row["family"],
                ", ".join(row["needs"]) or "-",
                "yes" if row["cold_start"] else "no",
                row["cost"],
                row["reference"],
            )
        console.print(view)

    out.result(rows, table)


# ---------------------------------------------------------------------------------------------
# alcli cache: what the embedding cache holds, and whether every byte of it is intact.

cache_app = typer.Typer(
    name="cache",
    help="Inspect and check the embedding cache.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(cache_app)


@cache_app.command("info")
def cache_info(
    ctx: typer.Context,
    cache_dir: CacheDirOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Where the cache is and what it holds per model fingerprint."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    from alcli.cache import EmbeddingCache

    with EmbeddingCache(cache_dir) as store:
        stats = store.stats()
        info = {"directory": str(store.directory), "read_only": store.read_only}

    def table(console: Any) -> None:
        console.print(f"{info['directory']}{' (read-only)' if info['read_only'] else ''}")
        for fp, s in stats.items():
            console.print(
                f"  {fp}  dim {s['dim']}  {s['items']:,} items  {s['failures']:,} failures  "
                f"{s['segments']} segments  {s['bytes'] / 2**20:,.1f} MiB"
            )

    out.result({**info, "fingerprints": stats}, table)


@cache_app.command("verify")
def cache_verify(
    ctx: typer.Context,
    cache_dir: CacheDirOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Read every cached embedding and check its checksums. Corrupt segments are set aside
    (their items are embedded again by the next run); exit 1 if there were any."""
    out = _begin(ctx, json_output=json_output, quiet=quiet, debug=debug)
    from alcli.cache import EmbeddingCache

    with EmbeddingCache(cache_dir) as store:
        segments = store.verify()
        read_only = store.read_only
    corrupt = [s for s in segments if not s["ok"]]
    rows = sum(s["rows"] for s in segments if s["kind"] == "embeddings")
    report = {"segments": len(segments), "rows": rows, "corrupt": corrupt}

    def human(console: Any) -> None:
        for s in corrupt:
            console.print(f"corrupt: {s['file']}: {s['reason']} ({s['rows']:,} rows)")
        console.print(f"{len(segments)} segments, {rows:,} rows checked: {len(corrupt)} corrupt")

    out.result(report, human)
    if corrupt:
        out.warn(
            "the cache is read-only: nothing was set aside"
            if read_only
            else "corrupt segments set aside; the next run embeds their items again"
        )
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="alcli")
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_went_away()


if __name__ == "__main__":
    main()
