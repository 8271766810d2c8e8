"""``alcli strategies``: the strategy zoo, as a table or JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from alcli.cli._options import OutputFlags, begin, flag_groups
from alcli.errors import UsageError


@flag_groups
def strategies(
    ctx: typer.Context,
    pattern: Annotated[
        str | None, typer.Argument(help="Glob on names or families, e.g. '*margin*'.")
    ] = None,
    *,
    output: OutputFlags,
) -> None:
    """List the strategy zoo: name, family, what it needs, cost, memory, out of core, reference."""
    out = begin(ctx, output)
    import alcli.strategies as zoo

    found = zoo.available(pattern)
    if pattern and not found:
        raise UsageError(f"no strategy matches '{pattern}'", hint="run 'alcli strategies'")
    rows: list[dict[str, Any]] = [
        {
            "name": s.name,
            "family": s.family,
            "needs": sorted(s.needs),
            "cold_start": s.cold_start,
            "cost": s.cost,
            "aliases": list(s.aliases),
            "reference": s.reference,
            "summary": s.summary,
            "scaling": {  # time and memory in n, d, b; how it runs out of core (issue 16)
                "time": s.scaling.time,
                "memory": s.scaling.memory,
                "at_scale": s.scaling.at_scale,
                "exact_at_scale": s.scaling.exact,
            },
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
        view.add_column("memory", no_wrap=True, max_width=18)
        view.add_column("out of core", overflow="ellipsis", no_wrap=True, max_width=26)
        view.add_column("reference", overflow="ellipsis", no_wrap=True, max_width=36)
        for row in rows:
            view.add_row(
                row["name"],
                row["family"],
                ", ".join(row["needs"]) or "-",
                "yes" if row["cold_start"] else "no",
                row["cost"],
                row["scaling"]["memory"],
                row["scaling"]["at_scale"],
                row["reference"],
            )
        console.print(view)

    out.result(rows, table)
