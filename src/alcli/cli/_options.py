"""Options several commands share, defined once, and what a command does with them first.

Typer reads a command's options from its signature, one parameter each, so a dozen options
shared by four commands would be declared again in each. Here a group of them is a small
dataclass (``EmbedFlags``, ``CacheFlags``, ``S3Flags``, ``OutputFlags``) and ``flag_groups``
lets a command take the group as one parameter: Typer sees the fields (same names, help,
defaults and place in ``--help``), the command gets one instance.

The output flags stay options of each command, not of the group: Click takes a group's
options only before the command name, and ``alcli select ... --json`` is how users type
them today.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from alcli.cli._config import check_consent, load_config_defaults
from alcli.errors import UsageError

if TYPE_CHECKING:  # numpy, rich and the pipeline load with the command that needs them
    from alcli.constraints import Constraints
    from alcli.embedding import EmbedOptions
    from alcli.output import Output

R = TypeVar("R")


@dataclass
class State:
    """Per-invocation settings that the error handler needs to see."""

    debug: bool = False


ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        callback=load_config_defaults,
        is_eager=True,
        help="Options file (default: ./alcli.toml if present). The command line wins. "
        "oracle-cmd and endpoint-url are used only from a file named here.",
    ),
]
PoolArg = Annotated[
    str | None,
    typer.Argument(
        help="Directory, glob, fsspec URI (s3://...), manifest (.txt/.csv/.jsonl) or - for stdin.",
        show_default=False,
    ),
]
LabelsFormatOpt = Annotated[
    str,
    typer.Option(
        "--labels-format",
        help="How labels files are written: auto (detect), alcli (uri,label CSV), "
        "label-studio-json, label-studio-json-min or label-studio-csv (Label Studio exports).",
    ),
]
DocumentRootOpt = Annotated[
    str | None,
    typer.Option(
        "--document-root",
        help="Label Studio's local-files document root (default: "
        "$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT): local images become /data/local-files/?d=...",
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
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice.")]
HeadOpt = Annotated[
    str,
    typer.Option(
        "--head",
        help=(
            "The model strategies read: logistic, graph (rows with their kNN mean), selftrain"
            " or graph_selftrain (the graph head refitted on its confident pool rows)."
        ),
    ),
]
GraphBackendOpt = Annotated[
    str,
    typer.Option(
        "--graph-backend",
        help="How the graph heads find each item's neighbours: auto (exact up to 20,000 "
        "items, else an HNSW index from faiss-cpu or usearch), exact, faiss or usearch. "
        "The graph is kept in the cache folder and reused.",
    ),
]
HeadComponentsOpt = Annotated[
    int | None,
    typer.Option(
        "--head-components",
        help="Principal components the graph heads' space keeps (default 1024; 0: every "
        "column, twice the embedding's). Fewer: faster rounds, a little less accuracy; on "
        "MNIST 1,024 of 2,560 cost 0.1-0.25 points at 200-400 labels.",
    ),
]
MemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--memory",
        help="Memory the pool's embeddings may take, e.g. 4GiB (default: a quarter of RAM, "
        "1-16 GiB); the cache is streamed in blocks within it.",
    ),
]


@dataclass(frozen=True)
class OutputFlags:
    """Where results and messages go (every command)."""

    json_output: Annotated[bool, typer.Option("--json", help="Machine output: JSON on stdout.")] = (
        False
    )
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Results only: no progress or notes.")
    ] = False
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False


def _engine_name(value: str) -> str:
    if value not in ("threads", "ray"):
        raise typer.BadParameter(f"{value!r} is not one of 'threads', 'ray'")
    return value


@dataclass(frozen=True)
class EmbedFlags:
    """The model and the pipeline's knobs: ``alcli.embedding.EmbedOptions`` from the shell."""

    model: Annotated[
        str, typer.Option("--model", help="Any torchvision classification model name.")
    ] = "mobilenet_v2"
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Weights enum name (default: the model's default), 'none', or a checkpoint file.",
        ),
    ] = None
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=8, help="Input resolution override (pixels).")
    ] = None
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per forward pass.")
    ] = 64
    io_threads: Annotated[
        int | None,
        typer.Option(
            "--io-threads",
            min=1,
            help="Reads in flight (default: 16 for remote pools, 2 for local).",
        ),
    ] = None
    decode_threads: Annotated[
        int, typer.Option("--decode-threads", min=1, help="Decode/preprocess threads.")
    ] = 2
    model_streams: Annotated[
        int | None,
        typer.Option(
            "--model-streams",
            min=1,
            help="Model threads running batches side by side (default: 1 on a GPU, one per "
            "torch thread on the CPU, up to 4).",
        ),
    ] = None
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "cpu"
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            callback=_engine_name,
            help="threads: this machine's pipeline; ray: Ray Data, local or a cluster "
            "(needs the ray extra of alcli).",
        ),
    ] = "threads"
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to join: auto or ray://HOST:10001 (default: a local Ray).",
        ),
    ] = None
    actors: Annotated[
        int | None,
        typer.Option(
            "--actors",
            min=1,
            help="Ray actors owning a model (default: one per CPU, or per GPU share).",
        ),
    ] = None
    gpus_per_actor: Annotated[
        float,
        typer.Option("--gpus-per-actor", min=0.0, help="GPUs each Ray actor takes (0: CPU)."),
    ] = 0.0
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="fp32, bf16, fp16 or auto: bf16 on CPUs with native bf16 (AVX512_BF16, AMX; "
            "~2x faster), fp16 on CUDA, else fp32. Part of the cache fingerprint.",
        ),
    ] = "fp32"
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime",
            help="torch, or openvino (CPU; the openvino extra of alcli). Part of the cache "
            "fingerprint.",
        ),
    ] = "torch"

    def options(self, cache: CacheFlags | None = None) -> EmbedOptions:
        """The library's options; without ``cache`` (bench) its default item timeout."""
        from alcli.embedding import EmbedOptions

        options = EmbedOptions(**asdict(self))
        if cache is not None:
            options.item_timeout = cache.item_timeout or None  # 0: no limit
            if cache.storage not in ("float32", "float16"):
                from alcli.errors import UsageError

                raise UsageError(f"--storage must be float32 or float16, not {cache.storage!r}")
            options.storage = cache.storage
        return options


@dataclass(frozen=True)
class ConstraintFlags:
    """Constraints on any strategy's picks (``alcli.constraints``): select, and auto's rounds."""

    balance: Annotated[
        str | None,
        typer.Option(
            "--balance",
            help="Per-class quotas by the head's predicted class: 'uniform' or a class,weight "
            "CSV (cold start: k-means clusters).",
        ),
    ] = None
    min_distance: Annotated[
        float | None,
        typer.Option(
            "--min-distance",
            help="No two picks, and no pick and labeled item, closer than this cosine distance.",
        ),
    ] = None

    def constraints(self) -> Constraints:
        """The checked constraints; ``UsageError`` (exit 2) for a bad value."""
        from alcli.constraints import parse

        return parse(self.balance, self.min_distance)


@dataclass(frozen=True)
class CacheFlags:
    """Where embeddings are cached, how items are keyed, how long one read may take."""

    item_timeout: Annotated[
        float,
        typer.Option(
            "--item-timeout",
            min=0.0,
            help="Seconds one item's read may take, retries included; past it the item is "
            "skipped (0: no limit).",
        ),
    ] = 60.0
    cache_dir: CacheDirOpt = None
    content_hash: Annotated[
        bool, typer.Option("--content-hash", help="Key the cache on file bytes, not metadata.")
    ] = False
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help="How new embeddings are stored: float32, or float16 (half the disk and reads).",
        ),
    ] = "float32"


@dataclass(frozen=True)
class S3Flags:
    """How to reach an object store."""

    endpoint_url: Annotated[
        str | None,
        typer.Option("--endpoint-url", help="S3-compatible endpoint (else from the AWS config)."),
    ] = None
    anon: Annotated[bool, typer.Option("--anon", help="Anonymous access to object stores.")] = False
    profile: Annotated[
        str | None, typer.Option("--profile", help="AWS profile for s3:// pools.")
    ] = None
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix", help="With an S3 Inventory report as POOL: only keys under this prefix."
        ),
    ] = None

    def storage_options(self) -> dict[str, Any]:
        from alcli.sources import s3_options

        return s3_options(endpoint_url=self.endpoint_url, profile=self.profile, anon=self.anon)


def flag_groups(command: Callable[..., R]) -> Callable[..., R]:
    """Let ``command`` take each flags dataclass above as one parameter.

    The signature Typer reads has the group's fields in the group parameter's place; the
    call gets them back as one instance.
    """
    return _FlagGroups(command)


class _FlagGroups:
    """``command`` as Typer should see it; the signature is built when Typer first reads it
    (evaluating the annotations costs milliseconds that ``import alcli.cli`` must not pay)."""

    def __init__(self, command: Callable[..., Any]) -> None:
        self.__wrapped__ = command
        self.__name__ = command.__name__
        self.__qualname__ = command.__qualname__
        self.__module__ = command.__module__
        self.__doc__ = command.__doc__

    @functools.cached_property
    def _expanded(self) -> tuple[inspect.Signature, dict[str, type]]:
        signature = inspect.signature(self.__wrapped__, eval_str=True)
        groups = {
            name: p.annotation
            for name, p in signature.parameters.items()
            if isinstance(p.annotation, type) and is_dataclass(p.annotation)
        }
        params: list[inspect.Parameter] = []
        for p in signature.parameters.values():
            params += _fields_as_parameters(groups[p.name]) if p.name in groups else [p]
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise TypeError(f"{self.__name__}: an option of a flags group is named twice")
        return signature.replace(parameters=params), groups

    @property
    def __signature__(self) -> inspect.Signature:
        return self._expanded[0]

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return {p.name: p.annotation for p in self.__signature__.parameters.values()}

    def __call__(self, **values: Any) -> Any:
        for name, group in self._expanded[1].items():
            values[name] = group(**{f.name: values.pop(f.name) for f in fields(group)})
        return self.__wrapped__(**values)


def _fields_as_parameters(group: type) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
        )
        for f in fields(group)
    ]


def begin(ctx: typer.Context, output: OutputFlags) -> Output:
    """Record --debug for the error handler, check consent for the config, build the sink."""
    if isinstance(ctx.obj, State):
        ctx.obj.debug = output.debug
    check_consent(ctx)
    from alcli.output import Output  # rich: ~30 ms that import alcli.cli need not pay

    return Output.from_flags(json_output=output.json_output, quiet=output.quiet)


def require_pool(pool: str | None) -> str:
    if not pool:
        raise UsageError("no POOL given", hint="pass it as an argument or set pool in alcli.toml")
    return pool
