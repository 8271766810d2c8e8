"""``alcli cache info|verify``: what the embedding cache holds, and whether every byte of it
is intact."""

from __future__ import annotations

from typing import Any

import typer

from alcli.cli._options import CacheDirOpt, OutputFlags, begin, flag_groups

cache_app = typer.Typer(
    name="cache",
    help="Inspect and check the embedding cache.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cache_app.command("info")
@flag_groups
def cache_info(
    ctx: typer.Context,
    cache_dir: CacheDirOpt = None,
    *,
    output: OutputFlags,
) -> None:
    """Where the cache is and what it holds per model fingerprint."""
    out = begin(ctx, output)
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
@flag_groups
def cache_verify(
    ctx: typer.Context,
    cache_dir: CacheDirOpt = None,
    *,
    output: OutputFlags,
) -> None:
    """Read every cached embedding and check its checksums. Corrupt segments are set aside
    (their items are embedded again by the next run); exit 1 if there were any."""
    out = begin(ctx, output)
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
