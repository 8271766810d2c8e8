"""``alcli select``: the next items to label, as URIs (or CSV / JSON lines with scores).

The command function is long only by its options (Typer reads them from its signature);
what it does is under 60 lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from alcli.cli._options import (
    CacheFlags,
    ConfigOpt,
    ConstraintFlags,
    DocumentRootOpt,
    EmbedFlags,
    GraphBackendOpt,
    HeadComponentsOpt,
    HeadOpt,
    LabelsFormatOpt,
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
    from alcli.output import Output
    from alcli.selection import Selection

FORMATS = ("uris", "csv", "jsonl", "label-studio")


@flag_groups
def select(
    ctx: typer.Context,
    pool: PoolArg = None,
    *,
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="A name from 'alcli strategies'.")
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", "-b", min=1, help="How many items to pick.")
    ] = None,
    labeled: Annotated[
        str | None,
        typer.Option(
            "--labeled", "-l", help="Labels so far: uri,label CSV or a Label Studio export."
        ),
    ] = None,
    labels_format: LabelsFormatOpt = "auto",
    exclude: Annotated[
        str | None,
        typer.Option("--exclude", help="URIs never to pick (one per line, or CSV with uri)."),
    ] = None,
    seed: SeedOpt = 0,
    head: HeadOpt = "logistic",
    graph_backend: GraphBackendOpt = "auto",
    head_components: HeadComponentsOpt = None,
    memory: MemoryOpt = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="uris (one per line), csv, jsonl or label-studio (tasks)."
        ),
    ] = "uris",
    out_dir: Annotated[
        str | None,
        typer.Option("--out", help="label-studio: write tasks-NNN.json files in this folder."),
    ] = None,
    document_root: DocumentRootOpt = None,
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
    constraint: ConstraintFlags,
    embedding: EmbedFlags,
    cache: CacheFlags,
    s3: S3Flags,
    output: OutputFlags,
    config: ConfigOpt = None,
) -> None:
    """Pick the next BUDGET items of POOL to label, with STRATEGY; prints their URIs."""
    out = begin(ctx, output)
    if not strategy:
        raise UsageError("no --strategy given", hint="see 'alcli strategies'")
    if budget is None:
        raise UsageError("no --budget given", hint="how many items to pick, e.g. --budget 1000")
    if output_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not '{output_format}'")
    if print0 and (out.is_json or output_format != "uris"):
        raise UsageError("--print0 separates plain URIs; it does not go with --json or --format")
    if out_dir and output_format != "label-studio":
        raise UsageError("--out writes Label Studio tasks; it goes with --format label-studio")
    if output_format == "label-studio" and out.is_json and not out_dir:
        raise UsageError("--json with --format label-studio needs --out DIR for the tasks")
    from alcli import labels as label_files
    from alcli import selection

    root = label_files.document_root(document_root)

    constraints = constraint.constraints()
    from alcli.learner.graph import check_backend
    from alcli.learner.graph_cache import graph_dir
    from alcli.learner.semisup import GRAPH_KINDS, check_components, check_head

    head = check_head(head)
    head_components = check_components(head_components)
    graph_backend = check_backend(graph_backend)
    from alcli.rows import ArrayRows, parse_memory

    memory_bytes = parse_memory(memory)

    # Everything that needs no embedding is checked first: a typo costs milliseconds. The
    # name and needs before any file is read or bucket listed; the labels against the pool
    # once it is resolved (a listing), before a single image is read.
    own_arrays = bool(probs or embeddings)
    has_embeddings = bool(embeddings) or not own_arrays
    if constraints.min_distance is not None and not has_embeddings:
        raise UsageError("--min-distance compares embeddings: give --embeddings with --probs")
    selection.check_inputs(
        strategy, probs=bool(probs), embeddings=has_embeddings, n_labeled=1 if labeled else 0
    )
    # Rows named by index (own arrays, no --uris) are matched as written, not as paths.
    normalize = bool(uris) or not own_arrays
    labels = (
        label_files.load_labels(
            labeled, labels_format=labels_format, normalize_uris=normalize, root=root
        )
        if labeled
        else {}
    )
    excluded = selection.read_uri_list(exclude) if exclude else []
    names: Sequence[str]  # a remembered manifest's are a table's lazy column
    if own_arrays:
        arrays = selection.load_arrays(probs=probs, embeddings=embeddings, uris=uris)
        names, prob_arr, emb_arr = arrays
        to_embed = None
    else:
        to_embed = resolve(pool, cache, s3.storage_options(), prefix=s3.prefix)
        names, prob_arr, emb_arr = to_embed.uris, None, None
    selection.check_request(
        strategy,
        uris=names,
        labels=labels,
        exclude=excluded,
        probs=prob_arr is not None,
        embeddings=has_embeddings,
    )
    if head in GRAPH_KINDS:  # no HNSW library for a big pool: say so before embedding it
        from alcli.learner.graph import choose_backend

        choose_backend(graph_backend, len(names))
    skipped: dict[str, str] = {}
    if to_embed is not None:
        result = embed_with_notes(
            out,
            to_embed,
            embedding.options(cache),
            cache.cache_dir,
            collect="rows",
            memory=memory_bytes,
        )
        names, pool_rows = result.uris, result.embeddings
        skipped = {failure.uri: failure.reason for failure in result.failures}
    elif emb_arr is not None:  # the user's .npy, memory-mapped: streamed the same way
        pool_rows = ArrayRows(emb_arr, memory=memory_bytes)
    else:
        pool_rows = None
    picks = selection.pick(
        strategy=strategy,
        budget=budget,
        uris=names,
        probs=prob_arr,
        embeddings=pool_rows,
        labels=labels,
        exclude=excluded,
        seed=seed,
        skipped=skipped,
        constraints=constraints,
        head=head,
        graph_backend=graph_backend,
        head_components=head_components,
        graph_cache=graph_dir(cache.cache_dir),
        progress=out.progress,
    )
    if output_format == "label-studio":
        from alcli.strategy_inputs import head_predictions

        predicted = head_predictions(
            picks.rows, pool_rows, names, labels, probs=prob_arr, skipped=skipped
        )
        # Which selection made a task: the strategy and the model (name and fingerprint).
        model = f"{embedding.model}/{result.fingerprint}" if to_embed is not None else "own-arrays"
        _render_tasks(out, picks, out_dir, root, f"{picks.strategy}@{model}", predicted)
        return
    _render(out, picks, output_format, "\0" if print0 else "\n")


def _render(out: Output, picks: Selection, output_format: str, terminator: str) -> None:
    """The picks on stdout in the chosen form; a note (and a warning) on stderr."""
    from alcli.output import one_per_line

    if picks.labeled_skipped:
        uri, reason = next(iter(picks.labeled_skipped.items()))
        out.warn(
            f"{len(picks.labeled_skipped)} labeled items were skipped and are left out "
            f"(e.g. {uri}: {reason})"
        )
    if output_format == "uris" and not out.is_json:
        one_per_line(picks.uris, terminator)  # before anything is written: all or nothing
    out.note(
        f"{picks.strategy}: picked {len(picks.rows):,} of {picks.n_pool:,} items "
        f"({picks.n_labeled:,} labeled, {picks.n_excluded:,} excluded)"
    )
    if picks.constraints is not None:
        out.note(constraint_note(picks.constraints))
    if picks.graph is not None:
        how = "read from the cache" if picks.graph["cached"] else "built"
        out.note(
            f"kNN graph ({picks.graph['backend']}, k={picks.graph['k']}): {how} in "
            f"{picks.graph['seconds']:.1f} s"
        )
    if out.is_json:
        out.result(picks.summary())
    elif output_format == "uris":
        out.lines(picks.uris, terminator=terminator)
    elif output_format == "csv":
        out.text(_csv_text(picks.records()))
    else:
        out.lines(json.dumps(record) for record in picks.records())


def _render_tasks(
    out: Output,
    picks: Selection,
    folder: str | None,
    root: str | None,
    model_version: str,
    predicted: list[str] | None,
) -> None:
    """The picks as Label Studio tasks: files in ``folder`` (split under the import limits),
    else one document on stdout."""
    from alcli.labels import label_studio_tasks, split_tasks, write_tasks

    tasks = label_studio_tasks(
        picks.uris,
        root=root,
        scores=[float(s) for s in picks.scores],
        model_version=model_version,
        predicted=predicted,
    )
    documents = split_tasks(tasks)
    if folder is None and len(documents) > 1:
        raise UsageError(
            f"{len(tasks):,} tasks are over one Label Studio import's limits",
            hint="pass --out DIR to write them as several files",
        )
    if picks.labeled_skipped:
        uri, reason = next(iter(picks.labeled_skipped.items()))
        out.warn(
            f"{len(picks.labeled_skipped)} labeled items were skipped and are left out "
            f"(e.g. {uri}: {reason})"
        )
    pre = "" if predicted is None else ", the head's class as pre-annotation"
    out.note(
        f"{picks.strategy}: picked {len(picks.rows):,} of {picks.n_pool:,} items as Label "
        f"Studio tasks (model_version {model_version}{pre})"
    )
    if picks.constraints is not None:
        out.note(constraint_note(picks.constraints))
    if folder is None:
        out.text(documents[0])
        return
    files = write_tasks(folder, documents)
    out.note(f"wrote {len(tasks):,} tasks in {len(files)} files: {', '.join(map(str, files))}")
    out.result(
        {**picks.summary(), "model_version": model_version, "files": [str(f) for f in files]},
        lambda console: None,
    )


def constraint_note(report: dict[str, Any]) -> str:
    """One line: what --min-distance skipped, and picked/target per class (or cluster)."""
    parts = []
    if report.get("min_distance") is not None:
        parts.append(
            f"min-distance {report['min_distance']:g} skipped "
            f"{report['skipped_min_distance']:,} candidates"
        )
    if report.get("balance") is not None:
        groups = ", ".join(
            f"{name} {g['picked']}/{g['target']}" for name, g in report["groups"].items()
        )
        parts.append(f"balance by {report['balance_by']} (picked/target): {groups}")
    return "; ".join(parts) + f" (examined {report['examined']:,} of the strategy's order)"


def _csv_text(records: list[dict[str, Any]]) -> str:
    """rank,uri,score rows, quoted as CSV needs (URIs may hold commas, quotes, line breaks)."""
    from alcli.output import csv_text

    rows = ((r["rank"], r["uri"], "" if r["score"] is None else repr(r["score"])) for r in records)
    return csv_text([("rank", "uri", "score"), *rows])
