"""``run_auto``: check the inputs, start or resume the run in ``out_dir``, race to the end."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.agent.config import AutoConfig, EvalSet
from alcli.agent.holdout import Holdout, check_sizes, hold_out
from alcli.agent.ledger import Ledger, PhaseHook, row_index
from alcli.agent.outputs import ProgressFn, Report
from alcli.agent.race import Race
from alcli.agent.state import STATE_FILE, RunState, load_state, pool_digest, save_state
from alcli.errors import UsageError
from alcli.learner import HeadSpace, PoolGraph, fit_scaler, head_space
from alcli.oracle import Oracle


def run_auto(
    uris: Sequence[str],
    embeddings: NDArray[Any],
    oracle: Oracle,
    config: AutoConfig,
    *,
    out_dir: str | os.PathLike[str],
    eval_set: EvalSet | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    on_phase: PhaseHook | None = None,
    graph_cache: str | os.PathLike[str] | None = None,
    graph: PoolGraph | None = None,
) -> Report:
    """Run PSHEA over a pool's cached embeddings and return its report (see ``alcli.agent``).

    ``out_dir`` holds the state and the outputs (labeled.csv, rounds.csv, report.json,
    curves.png, head.npz). With ``resume`` the saved run there continues: the config must be
    the one it started with (``saved_config``) and the pool the same. Without it, a folder that
    already holds a run is an error, so a typo cannot silently restart a paid-for run.
    ``on_phase(name)`` is called as each phase ends, its state saved (tests kill the process
    there). Raises ``OracleError`` (state saved) and lets ``PendingLabels`` through (state saved).
    ``graph_cache``: a folder the graph heads keep the pool's kNN graph in (None: built here).
    ``graph``: the pool's kNN graph for a graph head, when the caller already has it (built
    once per pool, e.g. loaded from disk); without it a graph head builds one per run (minutes
    at 50k items), counted in ``timings["graph"]``. It must be the graph of ``embeddings``.
    """
    X = _pool_rows(embeddings)
    if not isinstance(X, np.ndarray) and (config.head != "logistic" or config.constraints().active):
        # the semi-supervised heads and --balance/--min-distance read the whole pool
        X = X.materialize(f"--head {config.head}" if config.head != "logistic" else "constraints")
    config = _checked(uris, X, config, eval_set)
    if graph is not None and graph.neighbors.shape[0] != len(uris):
        raise UsageError(f"the graph has {graph.neighbors.shape[0]} rows; the pool {len(uris)}")
    out = Path(out_dir)
    phase = on_phase or _no_phase_hook
    row_of = row_index(uris)
    scaler = fit_scaler(X) if isinstance(X, np.ndarray) else _streamed_scaler(X)
    digest = pool_digest(uris, X)
    if resume:
        state = _resumed(out, config, digest)
    else:
        if (out / STATE_FILE).exists():
            raise UsageError(
                f"{out} already holds an alcli auto run",
                hint="pass --resume to continue it, or choose another --out folder",
            )
        check_sizes(row_of, eval_set, config)
        state = RunState.fresh(config, digest, len(uris))
        save_state(out, state)
    save = functools.partial(save_state, out, state)
    ledger = Ledger(uris, row_of, oracle, state, save=save, phase=phase)
    holdout = hold_out(X, ledger, state, eval_set, save=save)
    # the graph head's kNN graph (unless given): once per run (resumes redo it)
    with state.timed("graph"):
        space = head_space(
            config.head,
            X,
            scaler=scaler,
            backend=config.graph_backend,
            components=config.head_components,
            cache=graph_cache,
            graph=graph,
        )
        holdout = _in_space(holdout, space, state.eval_rows if eval_set is None else None)
    race = Race(
        X,
        space,
        state,
        out_dir=out,
        ledger=ledger,
        holdout=holdout,
        save=save,
        phase=phase,
        progress=progress,
    )
    return race.run()


def _streamed_scaler(X: Any) -> Any:
    """A streamed pool's scaler, remembered by its rows' identity (``alcli.scale``)."""
    from alcli.scale import pool_scaler

    return pool_scaler(X)


def _pool_rows(embeddings: Any) -> Any:
    """The pool as the race reads it: an array; a streamed ``PoolRows`` (``alcli.rows``) is
    gathered once when it fits its memory setting, else kept streamed (heads, scaler and
    model-output strategies read it a block at a time)."""
    from alcli.rows import PoolRows

    if isinstance(embeddings, PoolRows):
        return embeddings.materialize() if embeddings.fits() else embeddings
    return embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)


def _checked(
    uris: Sequence[str], X: NDArray[Any], config: AutoConfig, eval_set: EvalSet | None
) -> AutoConfig:
    """``config.checked()``, once the pool, its embeddings and the evaluation agree."""
    if X.ndim != 2 or X.shape[0] != len(uris):
        raise UsageError(f"embeddings have shape {X.shape} but the pool has {len(uris)} items")
    config = config.checked()
    if not isinstance(X, np.ndarray):  # streamed: strategies that read embeddings cannot race
        from alcli import strategies
        from alcli.rows import size_text

        gather = [n for n in config.strategies if "embeddings" in strategies.get(n).needs]
        if gather:
            raise UsageError(
                f"{', '.join(gather)} need the pool's embeddings in memory "
                f"({size_text(X.gathered_bytes)} as float32), more than half of --memory "
                f"({size_text(X.memory)})",
                hint="raise --memory, or race strategies that stream (uncertainty, "
                "disagreement, random; see 'alcli strategies')",
            )
    if eval_set is not None and config.eval_frac is not None:
        raise UsageError("give an eval set or an eval fraction, not both")
    if eval_set is None and config.eval_frac is None:
        raise UsageError("no evaluation set", hint="give --eval FILE (labeled) or --eval-frac F")
    if eval_set is not None and eval_set.embeddings.shape[1] != X.shape[1]:
        raise UsageError("eval embeddings and pool embeddings differ in dimension")
    return config


def _resumed(out: Path, config: AutoConfig, digest: str) -> RunState:
    """The run saved in ``out``, checked to be this config's over this pool."""
    state = load_state(out)
    saved, wanted = state.config.as_dict(), config.as_dict()
    if saved != wanted:
        changed = sorted(k for k in saved if saved.get(k) != wanted.get(k))
        raise UsageError(
            f"{out} holds a run with different settings ({', '.join(changed)})",
            hint="resume with the saved settings (alcli auto --resume DIR alone)",
        )
    if state.pool_digest != digest:
        raise UsageError(
            f"{out} holds a run over a different pool or embeddings",
            hint="resume with the same pool and model",
        )
    return state


def _in_space(holdout: Holdout, space: HeadSpace, pool_rows: list[int] | None) -> Holdout:
    """The eval rows where heads of ``space`` read them: held-out pool rows are the pool's
    own (smoothed) rows; an eval set outside the pool is smoothed over its pool neighbours."""
    if space.graph is None:
        return holdout
    if pool_rows is not None:
        X = space.pool[np.asarray(pool_rows, dtype=np.int64)]
    else:
        X = space.rows_for(holdout.X)
    return dataclasses.replace(holdout, X=X)


def _no_phase_hook(name: str) -> None:
    """The default: production runs do nothing between phases."""
