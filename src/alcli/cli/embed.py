"""``alcli embed``, and the embedding step ``select`` and ``auto`` share: progress, notes."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alcli.cli._options import (
    CacheFlags,
    ConfigOpt,
    EmbedFlags,
    OutputFlags,
    PoolArg,
    S3Flags,
    begin,
    flag_groups,
    require_pool,
)
from alcli.errors import UsageError

if TYPE_CHECKING:
    from alcli.embedding import EmbedOptions, EmbedResult
    from alcli.output import Output
    from alcli.sources import Pool


@flag_groups
def embed(
    ctx: typer.Context,
    pool: PoolArg = None,
    *,
    from_npy: Annotated[
        str | None,
        typer.Option("--from-npy", help="Import your own embeddings: a .npy [n, d] (with --uris)."),
    ] = None,
    from_parquet: Annotated[
        str | None,
        typer.Option("--from-parquet", help="Import from parquet: a uri and an embedding column."),
    ] = None,
    uris: Annotated[
        str | None,
        typer.Option("--uris", help="The URIs of --from-npy's rows (one per line, or CSV)."),
    ] = None,
    column: Annotated[
        str, typer.Option("--column", help="--from-parquet's embedding column.")
    ] = "embedding",
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="Name the imported features; select/auto use them with --model features:NAME.",
        ),
    ] = None,
    embedding: EmbedFlags,
    cache: CacheFlags,
    s3: S3Flags,
    output: OutputFlags,
    config: ConfigOpt = None,
) -> None:
    """Run the pipeline over every item of POOL not yet cached (or import your own)."""
    out = begin(ctx, output)
    if from_npy or from_parquet:
        _import(out, from_npy, from_parquet, uris, column, fingerprint, cache, s3)
        return
    if fingerprint or uris:
        raise UsageError("--fingerprint and --uris go with --from-npy or --from-parquet")
    resolved = resolve(pool, cache, s3.storage_options(), prefix=s3.prefix)
    result = embed_with_notes(
        out, resolved, embedding.options(cache), cache.cache_dir, collect=False
    )
    summary = result.summary()
    out.note(
        f"{summary['items']:,} items: {summary['cached']:,} cached, {summary['embedded']:,} "
        f"embedded, {summary['failed']:,} failed in {summary['seconds']:.2f} s "
        f"({summary['items_per_s'] or 0:,.0f} items/s)"
    )
    out.result(summary)


def _import(
    out: Output,
    from_npy: str | None,
    from_parquet: str | None,
    uris: str | None,
    column: str,
    name: str | None,
    cache: CacheFlags,
    s3: S3Flags,
) -> None:
    """``--from-npy``/``--from-parquet``: store the user's rows under features NAME."""
    from alcli import features

    if from_npy and from_parquet:
        raise UsageError("give --from-npy or --from-parquet, not both")
    if not name:
        raise UsageError(
            "importing features needs --fingerprint NAME",
            hint="the name select and auto use: --model features:NAME",
        )
    features.check_name(name)
    if from_npy:
        names, rows = features.load_npy(from_npy, uris)
    else:
        assert from_parquet is not None
        names, rows = features.load_parquet(from_parquet, column)
    done = features.import_features(
        name,
        names,
        rows,
        cache_dir=cache.cache_dir,
        content_hash=cache.content_hash,
        storage_options=s3.storage_options(),
    )
    for uri, reason in list(done.skipped.items())[:5]:
        out.warn(f"skipped {uri}: {reason}")
    out.note(
        f"features {name!r}: stored {done.stored:,} of {done.rows:,} rows (dim {done.dim}, "
        f"{len(done.skipped):,} skipped); use them with --model features:{name}"
    )
    out.result(done.summary())


def resolve(
    pool: str | None,
    cache: CacheFlags,
    storage_options: dict[str, Any],
    *,
    prefix: str | None = None,
) -> Pool:
    """POOL as items (a listing, no image read), so requests are checked against it;
    ``prefix``: ``--prefix`` (an S3 Inventory report's keys under it)."""
    from alcli.embedding import resolve as resolve_pool

    return resolve_pool(
        require_pool(pool),
        cache_dir=cache.cache_dir,
        content_hash=cache.content_hash,
        storage_options=storage_options,
        stdin=sys.stdin,
        inventory_prefix=prefix,
    )


def embed_with_notes(
    out: Output,
    resolved: Pool,
    options: EmbedOptions,
    cache_dir: str | None,
    *,
    collect: bool | str = True,
    memory: int | None = None,
) -> EmbedResult:
    """Embed what the cache lacks (embed, select and auto), with progress and notes.

    ``collect=False`` (``alcli embed``): counts only, no embeddings gathered, so the memory
    a run needs does not grow with the pool; ``"rows"`` (select, auto): the rows streamed
    from the cache within ``memory`` bytes (``alcli.rows``)."""
    from alcli.embedding import embed as embed_pool

    with out.progress("embedding", len(resolved.items)) as advance:
        result = embed_pool(
            resolved,
            options=options,
            cache=cache_dir,
            progress=advance,
            collect=collect,
            memory=memory,
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
