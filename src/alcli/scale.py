"""``select`` on a pool streamed out of core: every pass a block at a time, memory bounded.

``alcli.selection.pick`` hands a ``PoolRows`` (``alcli.rows``: the cache's rows, read in
blocks) here. Each strategy runs as its registry's ``scaling.at_scale`` says
(``strategies/_scaling.py``):

* model-output strategies (uncertainty family, random): the scaler and the head stream the
  pool (two passes), the n x C probabilities are small; the strategy runs as in memory: exact.
* committee strategies (BALD, vote entropy): the K x n x C probabilities are computed and
  scored a block at a time when they would take more than a quarter of the memory setting,
  each block's top-b kept; ``top_k`` breaks ties by the lower row, so the merged top-b is the
  in-memory one: exact.
* embedding strategies gather the pool when its float32 rows fit half the memory setting
  (exact); otherwise they run on candidates: DBAL and Cluster-Margin only ever read their
  10·b lowest-margin items, so those are gathered (exact); BADGE runs on the most uncertain
  items that fit (Ash et al. weight picks by gradient norm, which is large where the margin is
  small); coreset, k-means, TypiClust and ProbCover on a seeded uniform subsample of the
  unlabeled items plus the labeled ones (approximations; see benchmarks/RESULTS.md, issue 16,
  for their agreement with the exact method). Candidates are at most max(10^5, 50·b) rows
  and half the memory setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alcli import strategies
from alcli.rows import GATHER_FRACTION, CachedRows, PoolRows
from alcli.strategies._select import top_k

#: (phase, total rows) -> a context manager yielding ``advance(rows)``: a progress bar per
#: pass over the pool (``Output.progress`` has this shape).
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
#: Committee probabilities above this fraction of the memory setting are scored per block.
COMMITTEE_FRACTION = 0.25
#: Candidates per pick that DBAL and Cluster-Margin read (their own constant, 10).
PREFILTER_PER_PICK = 10
#: Candidates an approximated strategy runs on, at most: max(SUBSAMPLE_MIN, 50·b), within
#: half the memory setting. Coreset on 10^5 x 512 rows and b = 1,000 takes seconds, on the
#: 10^6 rows 2 GiB would hold, minutes.
SUBSAMPLE_MIN = 100_000
SUBSAMPLE_PER_PICK = 50
#: Remembered scalers kept (``<cache>/pools``), newest first.
MEMO_KEEP = 32
#: Seed stream of the subsample, apart from the strategy's own generator.
_SUBSAMPLE_STREAM = 16


@dataclass
class Streamed:
    """A streamed selection's picks and how they were made."""

    rows: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    exact: bool
    method: str  # how the strategy met the pool: "in memory", "streamed", "subsample of m", ...
    candidates: int  # rows the strategy itself saw (n unless it ran on candidates)


def streamed_pick(
    info: strategies.StrategyInfo,
    *,
    budget: int,
    pool: PoolRows,
    blocked: npt.NDArray[np.bool_],
    labeled_rows: npt.NDArray[np.int64],
    label_values: Sequence[Hashable],
    probs: npt.NDArray[np.float32] | None,
    seed: int,
    committee_size: int,
    timings: dict[str, float],
    progress: Progress | None = None,
) -> Streamed:
    """The strategy's picks over ``pool`` (``blocked``: labeled or excluded rows, never picked),
    reading the pool a block at a time; see the module docstring for what is exact."""
    needs = info.needs
    n = len(pool)
    model = bool({"probs", "committee"} & needs) and probs is None
    committee = None
    if model:
        with _phase(timings, "scaler_s"):
            scaler = pool_scaler(pool, progress)
        if "committee" in needs:
            # samples of the logistic head's Laplace posterior, as in memory
            # (alcli.strategy_inputs): the same seed gives the same committee either way
            from alcli.learner import laplace_committee, train_head

            with _phase(timings, "gather_s"):
                labeled_x = pool.take(labeled_rows)
            with _phase(timings, "head_s"):
                head = train_head(labeled_x, label_values, scaler=scaler)
                members = laplace_committee(
                    head,
                    labeled_x,
                    k=committee_size,
                    rng=np.random.default_rng(seed),
                    scaler=scaler,
                )
            size = committee_size * n * len(members.classes) * 4
            if size > pool.memory * COMMITTEE_FRACTION and info.scaling.at_scale == "streamed":
                return _committee_blocks(
                    info, members, budget, pool, blocked, seed, timings, progress
                )
            with _phase(timings, "predict_s"), _pass(pool, progress, "committee"):
                committee = members.proba(pool)
        if "probs" in needs:
            from alcli.learner import train_head

            with _phase(timings, "gather_s"):
                labeled_x = pool.take(labeled_rows)
            with _phase(timings, "head_s"):
                head = train_head(labeled_x, label_values, scaler=scaler)
            with _phase(timings, "predict_s"), _pass(pool, progress, "predict"):
                probs = head.predict_proba(pool)
    if "embeddings" not in needs:
        with _phase(timings, "strategy_s"):
            picks = _run(info, budget, blocked, seed, probs=probs, committee=committee)
        return Streamed(picks.indices, picks.scores, True, "streamed", n)
    return _with_embeddings(info, budget, pool, blocked, seed, probs, committee, timings, progress)


def pool_scaler(pool: PoolRows, progress: Progress | None = None) -> Any:
    """The pool's scaler: remembered next to the cache by the rows' identity (``CachedRows``),
    so a warm select reads the pool once (the predictions), not twice. The scaler is a pure
    function of the rows, and the identity changes whenever they can."""
    from alcli.learner import Scaler, fit_scaler

    memo = pool.memo_path("scaler") if isinstance(pool, CachedRows) else None
    if memo is not None and memo.exists():
        try:
            with np.load(memo, allow_pickle=False) as saved:
                mean, scale = saved["mean"], saved["scale"]
            if mean.shape == scale.shape == (pool.dim,):
                return Scaler(mean=mean, scale=scale)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: computed again and rewritten
    with _pass(pool, progress, "scaler"):
        scaler = fit_scaler(pool)
    if memo is not None:
        _save_quietly(memo, mean=scaler.mean, scale=scaler.scale)
    return scaler


def _save_quietly(path: Path, **arrays: Any) -> None:
    """Write an .npz atomically; a read-only cache just does not remember."""
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(temp, path)
        kept = sorted(path.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[MEMO_KEEP:]:  # a few KiB each; the newest pools are the ones reused
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _with_embeddings(
    info: strategies.StrategyInfo,
    budget: int,
    pool: PoolRows,
    blocked: npt.NDArray[np.bool_],
    seed: int,
    probs: npt.NDArray[np.float32] | None,
    committee: npt.NDArray[np.float32] | None,
    timings: dict[str, float],
    progress: Progress | None,
) -> Streamed:
    """Gather the pool when it fits, else run on candidates as the strategy's scaling says."""
    n = len(pool)
    if pool.fits():
        with _phase(timings, "gather_s"), _pass(pool, progress, "gather"):
            embeddings = pool.materialize(info.name)
        with _phase(timings, "strategy_s"):
            picks = _run(info, budget, blocked, seed, probs, committee, embeddings)
        return Streamed(picks.indices, picks.scores, True, "in memory", n)
    at_scale = info.scaling.at_scale
    unlabeled = np.flatnonzero(~blocked)
    capacity = max(budget, int(pool.memory * GATHER_FRACTION) // (4 * max(1, pool.dim)))
    # Time, too: these strategies cost O(b·m·d) or more on m candidates.
    capacity = min(capacity, max(SUBSAMPLE_MIN, SUBSAMPLE_PER_PICK * budget))
    if at_scale.startswith("margin prefilter") and probs is not None:
        exact = at_scale == "margin prefilter (exact)"
        count = min(unlabeled.size, PREFILTER_PER_PICK * budget if exact else capacity)
        from alcli.strategies.uncertainty import margin_scores

        order = top_k(margin_scores(probs)[unlabeled], count, largest=False)
        rows = np.sort(unlabeled[order])
        method = f"{count:,} lowest-margin items"
    else:
        exact = False
        rng = np.random.default_rng([seed, _SUBSAMPLE_STREAM])
        labeled = np.flatnonzero(blocked)
        if labeled.size > capacity // 2:
            labeled = np.sort(rng.choice(labeled, capacity // 2, replace=False))
        count = min(unlabeled.size, max(budget, capacity - labeled.size))
        chosen = (
            rng.choice(unlabeled, count, replace=False) if count < unlabeled.size else unlabeled
        )
        rows = np.union1d(chosen, labeled)
        method = f"uniform subsample of {count:,} unlabeled + {labeled.size:,} labeled"
    with _phase(timings, "gather_s"):
        embeddings = pool.take(rows)
    with _phase(timings, "strategy_s"):
        picks = _run(
            info,
            budget,
            blocked[rows],
            seed,
            None if probs is None else probs[rows],
            None if committee is None else committee[:, rows],
            embeddings,
        )
    return Streamed(rows[picks.indices], picks.scores, exact, method, int(rows.size))


def _committee_blocks(
    info: strategies.StrategyInfo,
    members: Any,
    budget: int,
    pool: PoolRows,
    blocked: npt.NDArray[np.bool_],
    seed: int,
    timings: dict[str, float],
    progress: Progress | None,
) -> Streamed:
    """A pointwise committee strategy a block at a time: each block's top-b, merged."""
    largest = True  # BALD's information and vote entropy: the higher, the sooner
    best_rows = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float64)
    k, n_classes = len(members.heads), len(members.classes)
    with _phase(timings, "predict_s"), _pass(pool, progress, "committee"):
        # all K heads' logits from one read and cast of each block
        for start, logits in pool.project_blocks(members.weights()):
            count = len(logits[0])
            probs = np.zeros((k, count, n_classes), dtype=np.float32)
            members.proba_from_logits(logits, probs)
            picks = _run(info, budget, blocked[start : start + count], seed, committee=probs)
            rows = np.concatenate([best_rows, picks.indices + start])
            scores = np.concatenate([best_scores, picks.scores])
            # top_k gives ties to the lower position: in row order, that is the lower row,
            # as in memory.
            order = np.argsort(rows, kind="stable")
            rows, scores = rows[order], scores[order]
            keep = top_k(scores, budget, largest=largest)
            best_rows, best_scores = rows[keep], scores[keep]
    return Streamed(best_rows, best_scores, True, "streamed per block", len(pool))


def _run(
    info: strategies.StrategyInfo,
    budget: int,
    blocked: npt.NDArray[np.bool_],
    seed: int,
    probs: npt.NDArray[np.float32] | None = None,
    committee: npt.NDArray[np.float32] | None = None,
    embeddings: npt.NDArray[np.float32] | None = None,
) -> strategies.Picks:
    return strategies.run_with_scores(
        info.name,
        budget=budget,
        probs=probs,
        committee=committee,
        embeddings=embeddings,
        labeled=blocked,
        seed=seed,
    )


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


@contextmanager
def _pass(pool: PoolRows, progress: Progress | None, phase: str) -> Iterator[None]:
    """A progress bar over one pass of the pool (``pool`` reports each block it reads)."""
    bar = progress(phase, len(pool)) if progress is not None else nullcontext(None)
    with bar as advance:
        if advance is None:
            yield
            return
        with pool.watching(advance):
            yield
