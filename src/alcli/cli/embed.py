"""``alcli embed``, and the embedding step ``select`` and ``auto`` share: progress, notes."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from alcli.embedding import EmbedOptions, EmbedResult
    from alcli.output import Output
    from alcli.sources import Pool


@flag_groups
def embed(
    ctx: typer.Context,
    pool: PoolArg = None,
    *,
    embedding: EmbedFlags,
    cache: CacheFlags,
    s3: S3Flags,
    output: OutputFlags,
    config: ConfigOpt = None,
) -> None:
    """Run the pipeline over every item of POOL not yet cached."""
    out = begin(ctx, output)
    resolved = resolve(pool, cache, s3.storage_options())
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


def resolve(pool: str | None, cache: CacheFlags, storage_options: dict[str, Any]) -> Pool:
    """POOL as items (a listing, no image read), so requests are checked against it."""
    from alcli.embedding import resolve as resolve_pool

    return resolve_pool(
        require_pool(pool),
        cache_dir=cache.cache_dir,
        content_hash=cache.content_hash,
        storage_options=storage_options,
        stdin=sys.stdin,
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
