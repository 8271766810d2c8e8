"""What ``alcli select`` does, as a library: labels -> head -> strategy -> picks.

The pool's embeddings come from the cache (``alcli.embedding``), or from the user's own
arrays (``--probs`` / ``--embeddings``). A head is trained only when the strategy needs class
probabilities or a committee, so a cold-start strategy costs nothing but itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from alcli import strategies
from alcli.constraints import Constraints, class_groups, cluster_groups, constrained_pick
from alcli.errors import StrategyError, UsageError
from alcli.labels import match_labels, read_uri_list
from alcli.rows import PoolRows

if TYPE_CHECKING:
    from alcli.scale import Progress

# match_labels and read_uri_list live in alcli.labels; they stay importable from here.
__all__ = [
    "COMMITTEE_SIZE",
    "Selection",
    "check_inputs",
    "check_request",
    "load_arrays",
    "match_labels",
    "pick",
    "read_uri_list",
]

#: Bootstrap heads in the committee of disagreement strategies (BALD, vote entropy).
COMMITTEE_SIZE = 5


@dataclass
class Selection:
    """The items to label next, in pick order, with the strategy's score for each.

    Was ``Picks``, a name that now means one thing: ``alcli.strategies.Picks``
    (a strategy's indices and scores), and the old name here warns (``__getattr__`` below).
    """

    strategy: str
    rows: np.ndarray
    uris: list[str]
    scores: np.ndarray
    n_pool: int
    n_labeled: int
    n_excluded: int
    timings: dict[str, float] = field(default_factory=dict)
    labeled_skipped: dict[str, str] = field(default_factory=dict)
    """Labeled URIs left out because the pool skipped them (uri -> reason): the caller warns."""
    constraints: dict[str, Any] | None = None
    """What ``--balance``/``--min-distance`` did (``ConstraintReport.as_dict``), if given."""
    exact: bool = True
    """False when a streamed pool too big for memory made the strategy run on candidates."""
    method: str = "in memory"
    """How the strategy met the pool: "in memory", "streamed", or its candidates (alcli.scale)."""
    graph: dict[str, Any] | None = None
    """The graph heads' kNN graph: backend, k, whether read from the cache, seconds."""

    def records(self) -> list[dict[str, Any]]:
        """One dict per pick: rank (1-based), uri, score, row."""
        return [
            {
                "rank": rank,
                "uri": uri,
                "score": None if np.isnan(score) else float(score),
                "row": int(row),
            }
            for rank, (uri, score, row) in enumerate(
                zip(self.uris, self.scores, self.rows, strict=True), start=1
            )
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "picked": len(self.rows),
            "pool": self.n_pool,
            "labeled": self.n_labeled,
            "excluded": self.n_excluded,
            "labeled_skipped": len(self.labeled_skipped),
            "seconds": {k: round(v, 4) for k, v in self.timings.items()},
            **({"constraints": self.constraints} if self.constraints is not None else {}),
            "exact": self.exact,
            "method": self.method,
            **({"graph": self.graph} if self.graph is not None else {}),
            "picks": self.records(),
        }


def check_inputs(
    strategy: str, *, probs: bool, embeddings: bool, n_labeled: int
) -> strategies.StrategyInfo:
    """The strategy, if ``pick`` can feed it: raises ``StrategyError`` saying why not.

    ``probs``/``embeddings``: whether the caller has them (a pool to embed counts as
    embeddings). Without probabilities, ``pick`` trains the head a strategy reads on the
    ``n_labeled`` labels; a user's own probabilities need no labels. Needs no arrays, so
    ``alcli select`` runs it before embedding anything.
    """
    info = strategies.get(strategy)
    model_needs = {"probs", "committee"} & info.needs
    given = {"embeddings"} if embeddings else set()
    if probs:
        given.add("probs")
    elif model_needs:
        if not n_labeled:
            cold = ", ".join(s.name for s in strategies.available() if s.cold_start)
            raise StrategyError(
                f"{info.name} needs labeled items to train a head on (give --labeled "
                "labels.csv, or your own model's --probs)",
                hint=f"for a cold start use one of: {cold}",
            )
        if embeddings:
            given |= model_needs
    return strategies.check_needs(info.name, given)


def check_request(
    strategy: str,
    *,
    uris: Sequence[str],
    labels: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    probs: bool = False,
    embeddings: bool = True,
) -> strategies.StrategyInfo:
    """Everything ``pick`` would reject that needs no embeddings, checked on the pool's URIs.

    A typo in a strategy name or a labels file that matches nothing should cost
    milliseconds, not an hour of embedding first.
    """
    labeled_rows, _ = match_labels(uris, labels or {})
    match_labels(uris, dict.fromkeys(exclude, ""), what="excluded")
    return check_inputs(strategy, probs=probs, embeddings=embeddings, n_labeled=len(labeled_rows))


def pick(
    *,
    strategy: str,
    budget: int,
    uris: Sequence[str],
    embeddings: np.ndarray | PoolRows | None = None,
    probs: np.ndarray | None = None,
    labels: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
    seed: int = 0,
    skipped: Mapping[str, str] | None = None,
    constraints: Constraints | None = None,
    head: str = "logistic",
    graph_backend: str = "auto",
    head_components: int | None = None,
    graph_cache: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Selection:
    """Run ``strategy`` over the pool and return the next ``budget`` items to label.

    ``labels`` (uri -> label) trains the head when the strategy needs probabilities; those
    items and the ``exclude`` URIs (already sent out for labeling, say) are never picked.
    With ``probs`` given, no head is trained: the user brought their own model.
    ``skipped`` (uri -> reason) names pool items that could not be embedded (so are not in
    ``uris``): labels and exclusions naming them are left out (listed in
    ``Selection.labeled_skipped``) instead of failing as URIs the pool lacks. One bad image
    must not stop a selection; a URI that names no pool item at all still does.
    ``constraints`` (``--balance``, ``--min-distance``): the picks are the first items of the
    strategy's order they allow (``alcli.constraints``); balance groups by the head's
    predicted class (trained for it when the strategy needs none), or at a cold start by
    k-means cluster.
    ``head``: the kind of head trained (``alcli.learner.semisup.HEAD_KINDS``); the graph
    kinds build the pool's kNN graph with ``graph_backend`` (``alcli.learner.graph``) and keep
    it in the folder ``graph_cache`` (``alcli.learner.graph_cache``; None: built every call).
    ``embeddings`` may be an ``alcli.rows.PoolRows`` (what ``embed(collect="rows")`` gives):
    the pool is then streamed a block at a time within its memory setting (``alcli.scale``),
    with ``progress(phase, rows)`` told of each pass.
    """
    info = strategies.get(strategy)
    timings: dict[str, float] = {}
    n = len(uris)
    skipped = skipped or {}
    labels = labels or {}
    labeled_skipped = {uri: skipped[uri] for uri in labels if uri in skipped}
    if labeled_skipped:
        labels = {uri: label for uri, label in labels.items() if uri not in labeled_skipped}
    labeled_rows, label_values = match_labels(uris, labels)
    excluded_rows = _excluded_rows(uris, exclude, skipped)
    blocked = np.zeros(n, dtype=bool)
    blocked[labeled_rows] = True
    blocked[excluded_rows] = True
    constraints = constraints or Constraints()
    if isinstance(embeddings, PoolRows) and (constraints.active or head != "logistic"):
        # --balance, --min-distance and the semi-supervised heads read the whole pool: in
        # memory when it fits the memory setting, else a one-line error saying so.
        embeddings = embeddings.materialize(
            "--balance/--min-distance" if constraints.active else f"--head {head}"
        )
    if isinstance(embeddings, PoolRows):
        from alcli.scale import streamed_pick

        check_inputs(
            info.name, probs=probs is not None, embeddings=True, n_labeled=len(labeled_rows)
        )
        streamed = streamed_pick(
            info,
            budget=budget,
            pool=embeddings,
            blocked=blocked,
            labeled_rows=labeled_rows,
            label_values=label_values,
            probs=probs,
            seed=seed,
            committee_size=COMMITTEE_SIZE,
            timings=timings,
            progress=progress,
        )
        return Selection(
            strategy=info.name,
            rows=streamed.rows,
            uris=[uris[r] for r in streamed.rows],
            scores=np.asarray(streamed.scores, dtype=np.float64),
            n_pool=n,
            n_labeled=len(labeled_rows),
            n_excluded=len(excluded_rows),
            timings=timings,
            labeled_skipped=labeled_skipped,
            exact=streamed.exact,
            method=streamed.method,
        )
    balance = constraints.balance is not None
    own_probs = probs
    graph_info: dict[str, Any] = {}  # what the graph heads' graph was, told by _model_inputs
    probs, committee, classes = _model_inputs(
        info,
        embeddings,
        probs,
        labeled_rows,
        label_values,
        seed=seed,
        timings=timings,
        want_probs=balance,
        head=head,
        graph_backend=graph_backend,
        head_components=head_components,
        graph_cache=graph_cache,
        graph_info=graph_info,
    )
    started = time.perf_counter()
    report = None
    if constraints.active:
        groups = None
        if balance:
            groups = _balance_groups(constraints, probs, classes, embeddings, seed, own_probs)
        (rows, scores), constraint_report = constrained_pick(
            info.name,
            budget=budget,
            constraints=constraints,
            embeddings=embeddings,
            labeled=blocked,
            groups=groups,
            probs=probs,
            committee=committee,
            seed=seed,
        )
        report = constraint_report.as_dict()
    else:
        rows, scores = strategies.run_with_scores(
            info.name,
            budget=budget,
            probs=probs,
            committee=committee,
            embeddings=embeddings,
            labeled=blocked,
            seed=seed,
        )
    timings["strategy_s"] = time.perf_counter() - started
    return Selection(
        strategy=info.name,
        rows=rows,
        uris=[uris[r] for r in rows],
        scores=np.asarray(scores, dtype=np.float64),
        n_pool=n,
        n_labeled=len(labeled_rows),
        n_excluded=len(excluded_rows),
        timings=timings,
        labeled_skipped=labeled_skipped,
        constraints=report,
        graph=graph_info or None,
    )


def _balance_groups(
    constraints: Constraints,
    probs: np.ndarray | None,
    classes: np.ndarray | None,
    embeddings: np.ndarray | None,
    seed: int,
    own_probs: np.ndarray | None,
) -> Any:
    """Each row's group for ``--balance``: the predicted class, else (cold start) a cluster."""
    from alcli.constraints import COLD_START_CLUSTERS

    if probs is not None:
        return class_groups(probs, None if own_probs is not None else classes)
    balance = constraints.balance
    if balance is not None and balance.weights is not None:
        raise UsageError(
            f"--balance {balance.spec}: a target distribution names classes, and with no "
            "labels or --probs there are none",
            hint="use --balance uniform (k-means clusters stand in for classes)",
        )
    if embeddings is None:
        raise UsageError("--balance needs --labeled, --probs or embeddings")
    return cluster_groups(embeddings, COLD_START_CLUSTERS, seed)


def _excluded_rows(
    uris: Sequence[str], exclude: Iterable[str], skipped: Mapping[str, str]
) -> np.ndarray:
    """Rows of the URIs sent out already; those naming a skipped item are left out."""
    excluded = dict.fromkeys((uri for uri in exclude if uri not in skipped), "")
    rows, _ = match_labels(uris, excluded, what="excluded")
    return rows


def _model_inputs(
    info: strategies.StrategyInfo,
    embeddings: np.ndarray | None,
    probs: np.ndarray | None,
    labeled_rows: np.ndarray,
    label_values: Sequence[str],
    *,
    seed: int,
    timings: dict[str, float],
    want_probs: bool = False,
    head: str = "logistic",
    graph_backend: str = "auto",
    head_components: int | None = None,
    graph_cache: str | os.PathLike[str] | None = None,
    graph_info: dict[str, Any] | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(probs, committee, classes) for the strategy: the user's own ``probs`` as given, else
    a head (or committee) trained on the labeled rows when the strategy reads one, or when
    ``want_probs`` (``--balance`` groups by the head's predicted class).

    The graph heads build their graph with ``graph_backend``, kept in ``graph_cache``; what
    it was (backend, k, read from the cache, seconds) goes into ``graph_info``."""
    committee = None
    classes = None
    check_inputs(
        info.name,
        probs=probs is not None,
        embeddings=embeddings is not None,
        n_labeled=len(labeled_rows),
    )
    needs = set(info.needs) | ({"probs"} if want_probs else set())
    needs_model = bool({"probs", "committee"} & needs)
    if needs_model and probs is None and embeddings is not None and len(labeled_rows):
        # scipy's optimizer: loaded once a head is trained, so a typo exits at once
        from alcli.learner import head_space
        from alcli.strategy_inputs import strategy_inputs

        started = time.perf_counter()
        space = head_space(
            head, embeddings, backend=graph_backend, cache=graph_cache, components=head_components
        )
        if space.graph is not None:
            timings["graph_s"] = space.graph.seconds
            (graph_info if graph_info is not None else {}).update(
                backend=space.graph.backend,
                k=space.graph.k,
                cached=space.graph.cached,
                seconds=round(space.graph.seconds, 4),
                space_dims=int(space.pool.shape[1]),
            )
        inputs = strategy_inputs(
            needs,
            space.pool,
            labeled_rows,
            label_values,
            scaler=space.scaler,
            seed=seed,
            committee_size=COMMITTEE_SIZE,
            space=space,
        )
        probs, committee = inputs.probs, inputs.committee
        classes = np.unique(np.asarray(label_values))
        timings["head_s"] = time.perf_counter() - started

    return probs, committee, classes


def __getattr__(name: str) -> Any:
    """``Picks``, the old name of ``Selection``, still imports, with a DeprecationWarning."""
    if name == "Picks":
        import warnings

        warnings.warn(
            "alcli.selection.Picks is now alcli.selection.Selection",
            DeprecationWarning,
            stacklevel=2,
        )
        return Selection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_arrays(
    *, probs: str | None, embeddings: str | None, uris: str | None
) -> tuple[list[str], np.ndarray | None, np.ndarray | None]:
    """The user's own arrays (``--probs``/``--embeddings`` .npy files) and their rows' names:
    the URIs in ``uris`` (``read_uri_list``), else the row indices as strings."""
    arrays = [
        _load_npy(path, flag) if path else None
        for path, flag in ((probs, "--probs"), (embeddings, "--embeddings"))
    ]
    rows = {a.shape[0] for a in arrays if a is not None}
    if len(rows) != 1:
        raise UsageError(f"--probs and --embeddings disagree on the number of rows: {sorted(rows)}")
    n = rows.pop()
    names = read_uri_list(uris) if uris else [str(i) for i in range(n)]
    if len(names) != n:
        raise UsageError(f"--uris names {len(names):,} rows but the arrays have {n:,}")
    return names, arrays[0], arrays[1]


def _load_npy(path: str, flag: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{flag}: file not found: {path}") from None
    except ValueError as exc:
        raise UsageError(f"{flag}: not a .npy array file: {path} ({exc})") from None
    if arr.ndim != 2:
        raise UsageError(f"{flag}: expected a 2-D array, got shape {arr.shape}")
    return np.asarray(arr)
