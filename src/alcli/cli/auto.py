"""``alcli auto``: label until the target accuracy or the budget, racing strategies (PSHEA).

The command function is long only by its options (Typer reads them from its signature);
what it does is under 60 lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from alcli.cli._options import (
    CacheFlags,
    ConfigOpt,
    ConstraintFlags,
    EmbedFlags,
    GraphBackendOpt,
    HeadComponentsOpt,
    HeadOpt,
    MemoryOpt,
    OutputFlags,
    PoolArg,
    S3Flags,
    SeedOpt,
    begin,
    flag_groups,
)
from alcli.cli.embed import embed_with_notes, resolve
from alcli.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from alcli.autorun import ClassWatch, PendingLabels
    from alcli.output import Output


@flag_groups
def auto(
    ctx: typer.Context,
    pool: PoolArg = None,
    *,
    oracle: Annotated[
        str | None,
        typer.Option(
            "--oracle",
            help="Who labels: a labels file (simulation), dir:PATH (humans, via files) or "
            "label-studio://HOST:PORT/PROJECT_ID (token in LABEL_STUDIO_API_KEY).",
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
        typer.Option(
            "--spend",
            help="pooled (R per round, split; every strategy picks with the head on every "
            "label bought), shared (split; each picks with its own set's head) or paper "
            "(R per strategy).",
        ),
    ] = "pooled",
    seed: SeedOpt = 0,
    head: HeadOpt = "logistic",
    graph_backend: GraphBackendOpt = "auto",
    head_components: HeadComponentsOpt = None,
    memory: MemoryOpt = None,
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="Run folder (state, labeled.csv, report). Default: new."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Continue the run saved in this folder."),
    ] = None,
    constraint: ConstraintFlags,
    embedding: EmbedFlags,
    cache: CacheFlags,
    s3: S3Flags,
    output: OutputFlags,
    config: ConfigOpt = None,
) -> None:
    """Label until the target accuracy or the budget, choosing the strategy as it goes (PSHEA)."""
    out = begin(ctx, output)
    from alcli import agent, autorun
    from alcli.learner.graph import choose_backend
    from alcli.learner.graph_cache import graph_dir
    from alcli.learner.semisup import GRAPH_KINDS

    if resume:
        settings, folder = agent.saved_config(resume), resume
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
            balance=constraint.balance,
            min_distance=constraint.min_distance,
            head=head,
            graph_backend=graph_backend,
            head_components=head_components,
        )
        folder = out_dir or autorun.new_run_dir()
    # Everything that needs no embedding is checked first: a typo costs milliseconds.
    autorun.check_run_dir(folder, resume=bool(resume))
    labeler = autorun.make_oracle(oracle, oracle_cmd, timeout_s=oracle_timeout)
    eval_labels = autorun.eval_labels(eval_file, eval_frac=settings.eval_frac)
    autorun.check_classes(labeler, eval_labels)
    options = embedding.options(cache)
    storage = s3.storage_options()
    resolved = resolve(pool, cache, storage, prefix=s3.prefix)
    autorun.check_coverage(labeler, resolved.uris)
    if settings.head in GRAPH_KINDS:  # no HNSW library for a big pool: say so before embedding
        choose_backend(settings.graph_backend, len(resolved.uris))
    from alcli.rows import parse_memory

    result = embed_with_notes(
        out, resolved, options, cache.cache_dir, collect="rows", memory=parse_memory(memory)
    )
    evaluation = None
    if eval_file is not None and eval_labels is not None:
        evaluation = autorun.eval_set(
            eval_file,
            eval_labels,
            result,
            options=options,
            cache_dir=cache.cache_dir,
            storage_options=storage,
        )
    uris, embeddings = autorun.askable(labeler, result.uris, result.embeddings, warn=out.warn)
    watch = autorun.ClassWatch(labeler, evaluation, folder)
    out.note(f"run folder: {folder}")
    try:
        report = agent.run_auto(
            uris,
            embeddings,
            watch,
            settings,
            out_dir=folder,
            eval_set=evaluation,
            resume=bool(resume),
            progress=_round_notes(out, watch),
            graph_cache=graph_dir(cache.cache_dir),
        )
    except autorun.PendingLabels as pending:
        _render_pending(out, pending, folder, oracle)  # not a failure: humans label, then --resume
        return
    out.result(report.as_dict(), lambda console: autorun.render_report(report, console))


def _round_notes(out: Output, watch: ClassWatch) -> Callable[[Any], None]:
    """A note per round; after round 0, stop if the labels share no class with the eval set."""

    def on_round(summary: Any) -> None:
        gone = f", eliminated {summary.eliminated}" if summary.eliminated else ""
        out.note(
            f"round {summary.round}: best accuracy {summary.best_accuracy:.4f}, "
            f"{summary.labels_bought:,} labels bought, alive {', '.join(summary.alive)}{gone}"
        )
        watch.check()  # labels in another vocabulary than the eval set's: stop now

    return on_round


def _render_pending(out: Output, pending: PendingLabels, folder: str, oracle: str | None) -> None:
    """The run waits for humans: where to put the labels, and how to go on."""
    import shlex

    # The oracle is not saved with the run (a command may hold secrets): name it again.
    again = f"alcli auto --resume {shlex.quote(folder)}"
    if oracle:
        again += f" --oracle {shlex.quote(oracle)}"
    out.note(f"waiting for labels: {pending.todo}, then run '{again}'")
    out.result({"status": "waiting_for_labels", **pending.as_dict(), "resume": again})
