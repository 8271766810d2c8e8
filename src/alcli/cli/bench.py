"""``alcli bench``: how fast alcli embeds a pool here, and what each strategy costs at its size."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from alcli.cli._options import (
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


@flag_groups
def bench(
    ctx: typer.Context,
    pool: PoolArg = None,
    *,
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
    embedding: EmbedFlags,
    s3: S3Flags,
    output: OutputFlags,
    config: ConfigOpt = None,
) -> None:
    """How fast alcli embeds POOL here, against a plain loop, where the time goes, and what
    each strategy costs at POOL's size (your cache is not touched)."""
    out = begin(ctx, output)
    from alcli.bench import DEFAULT_STRATEGIES, run_bench
    from alcli.output import QUIET

    if no_strategies and strategies:
        raise UsageError("--strategies and --no-strategies contradict each other")
    if s3.prefix:
        raise UsageError("bench measures a whole POOL: --prefix is for embed, select and auto")
    report = run_bench(
        require_pool(pool),
        options=embedding.options(),
        limit=limit,
        rounds=rounds,
        strategies=None if no_strategies else (strategies or DEFAULT_STRATEGIES),
        budget=budget,
        storage_options=s3.storage_options(),
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
        (f"model only (bound), {data['numerics']}", bound, True),
        *((f"  model only, {key}", ips, True) for key, ips in data["bound_by_numerics"].items()),
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
        f"fastest precision/runtime here: {data['fastest_numerics']} (this run: "
        f"{data['numerics']}; choose with --precision and --runtime)",
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
