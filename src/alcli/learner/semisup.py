"""Which head a round trains: ``logistic``, ``graph``, ``selftrain`` or ``graph_selftrain``, one
entry point for all.

Every kind ends in an ordinary ``Head`` (a logistic regression), so strategies, committees,
evaluation and the agent's head store treat them alike, and a head still applies to any
array of rows (chunk by chunk):

``logistic``
    The head on the labeled rows alone (``alcli.learner.heads``).
``graph``
    The same head on each row's embedding next to the mean of its neighbours' over the pool's
    kNN graph (``alcli.learner.graph``), [x, Σ_j w_j·x_j]: the unlabeled pool shapes the
    features every head sees, and the head's own weights decide, per feature and class, how
    much the neighbourhood counts (a fixed mix x' = ½x + ½·mean, the first version, helped
    most at 100 labels and fell behind the plain head from ~700; the concatenation is the
    multi-scale input of SIGN, Rossi et al. 2020, arXiv:2004.11198, with one hop).
    Non-negative embeddings (a CNN's pooled ReLU outputs) are square-rooted first, the
    power normalisation of Perronnin et al., ECCV 2010: it damps the few bursty channels that
    dominate a standardized dot product. Measured on MNIST features with random labels
    (RESULTS.md, issue 18, session 7): at 100 / 400 / 700 / 1,000 labels, plain 0.796 /
    0.884 / 0.910 / 0.916, square root alone 0.813 / 0.892 / 0.916 / 0.922, ½-mix 0.833 /
    0.903 / 0.916 / 0.919, this 0.850 / 0.909 / 0.921 / 0.923. ``HeadSpace`` holds the pool
    in that space; rows outside the pool (an eval set) get the mean of their neighbours in it.
``selftrain``
    Self-training (Yarowsky 1995; Lee, Pseudo-Label, ICML-W 2013): the logistic head, then the
    pool rows it predicts with probability ≥ ``threshold`` join the training set with their
    predicted label (at most ``ratio`` × the labeled count, the most confident first, split
    evenly over the predicted classes so no class floods the set), and the head is refitted
    once from the first. Deterministic: no random draw, ties to the lower row.
``graph_selftrain``
    The ``graph`` head, then self-training without the per-label cap or the class split:
    the pool rows it predicts with probability ≥ ``GRAPH_SELFTRAIN_THRESHOLD`` join with their
    predicted label, at most ``GRAPH_SELFTRAIN_MAX_ROWS`` of them taken evenly over the
    confidence ranks (the whole confident range, not only its easiest top, and a refit whose
    cost does not grow with the pool), refitted ``GRAPH_SELFTRAIN_REFITS`` times, each round
    of pseudo-labels from the last refit; strategies read the final head. On MNIST the graph
    head's confident rows are 32-44k of 50k and ~99 % right, so the refit learns the pool's own
    cluster shapes. DBAL, 5 seeds, labels to random's 0.9355 at 2,000 (RESULTS.md, issue 18,
    session 11, every column of the space): all confident rows (≤ 50k), one refit, 412.9 in
    160 s; 10k spread, two refits, 378.4 in 99 s; one refit instead, 423.6; the 10k most
    confident instead, 463.3. A third refit (scikit-learn's digits, 20 seeds) gained random
    picks 0.3-0.5 point and cost DBAL 2.1 at 40 labels and 1.1 at 80. Since session 12 the
    cap counts the bought labels, and the graph space keeps its top
    ``GRAPH_SPACE_COMPONENTS`` principal components: 391.5 labels, the five runs in 42.5 s
    against 106.8 s with every column (below).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alcli.errors import UsageError
from alcli.learner.graph import DEFAULT_BACKEND, PCA_ROWS, PoolGraph, principal_axes
from alcli.learner.graph_cache import cached_graph
from alcli.learner.heads import DEFAULT_MAX_ITER, Head, Scaler, fit_scaler, train_head

HEAD_KINDS = ("logistic", "graph", "selftrain", "graph_selftrain")
DEFAULT_HEAD = "logistic"
#: Self-training keeps pool rows predicted at least this confidently.
SELFTRAIN_THRESHOLD = 0.99
#: ...and at most this many per labeled row (bounds the refit: 400 labels -> 12,000 rows).
SELFTRAIN_RATIO = 30
#: ``graph_selftrain`` keeps every pool row predicted at least this confidently...
GRAPH_SELFTRAIN_THRESHOLD = 0.9
#: ...up to this many rows in a refit, the bought labels included ("count_labeled"), spread
#: evenly over the confidence ranks (every k-th row, most confident first), which bounds the
#: refit's cost at any pool size and any label count. Counting the labels changed DBAL's
#: labels to 0.9355 from 393.6 to 392.6 and cut the overhead run's heads from 35.8 to 27.8 s
#: (at 5,700 labels a refit had read 15,700 rows); with 10,000 labels or more the head is the
#: graph head (session 12).
GRAPH_SELFTRAIN_MAX_ROWS = 10_000
#: ``graph_selftrain`` pseudo-labels and refits this many times, each from the last refit.
GRAPH_SELFTRAIN_REFITS = 2
#: The kinds that build the kNN graph space.
GRAPH_KINDS = frozenset({"graph", "graph_selftrain"})
#: The graph space's [x, neighbours' mean] rows (2d columns: 2,560 for MobileNetV2) are kept
#: as their top principal components, standardized first (``Projection``): every head in the
#: space costs in proportion to its width (an L-BFGS step reads its training rows twice, a
#: pseudo-label pass the whole pool) and the pool's copy shrinks. L2 is unchanged by the
#: rotation, so a head is the full space's with the weakest directions dropped; whitening
#: them too (unit variance each) halved the iterations but, penalising the strong directions
#: most, fell to 0.58 accuracy at 100 labels (a scratch run). DBAL, 5 seeds, labels to
#: random's 0.9355 at 2,000 (RESULTS.md, issue 18, session 12): every column 378.4 in 107 s,
#: 1,024 components 393.6 in 63 s, 512 414.9 in 30 s. The agent's overhead run: 101.9 s with
#: every column (session 11), 58.0-58.8 s with 1,024 (and the cap below, the 8M threads of
#: ``heads.SERIAL_BELOW``), 49.3 s with 512; more than 1,024 was not measured.
GRAPH_SPACE_COMPONENTS = 1024
#: Rows standardized and projected at a time (bounds the [rows, 2d] temporaries).
PROJECT_BLOCK_ROWS = 8192
#: The kinds that self-train, and how: ``pseudo_labels``' keyword arguments, plus four that
#: ``fit_head`` reads (``refits``, ``weight``, ``agree``, ``count_labeled``: ``max_rows``
#: counts the bought labels too). ``weight="balanced"`` gives the
#: bought labels as much weight in the refit, together, as all the pseudo-labels (the
#: L_s + λ_u·L_u loss of FixMatch, Sohn et al. 2020, with λ_u = 1, each a mean over its own
#: rows; default "equal": one row, one weight);
#: ``agree=True`` keeps only the pseudo-labels that label spreading over the kNN graph
#: (``label_spreading``) also gives. With ``balance="prior"`` (``pseudo_labels``) they are
#: off by default: on scikit-learn's digits (20-100 labels) the weights and the prior quotas
#: gained 0.4-3 points over this head with DBAL and margin, but on MNIST (DBAL, seed 0,
#: 100-500 labels) each lost 0.1-0.8 point against it; the agreement filter gained 0.06-0.3
#: point on MNIST seed 0, lost 1.2 on seed 1 (5-seed mean 0.9322 vs 0.9347), weak on digits
#: (RESULTS.md, issue 18, session 10).
SELFTRAIN: dict[str, dict[str, Any]] = {
    "selftrain": {"threshold": SELFTRAIN_THRESHOLD, "ratio": SELFTRAIN_RATIO},
    "graph_selftrain": {
        "threshold": GRAPH_SELFTRAIN_THRESHOLD,
        "ratio": None,
        "max_rows": GRAPH_SELFTRAIN_MAX_ROWS,
        "spread": True,
        "refits": GRAPH_SELFTRAIN_REFITS,
        "count_labeled": True,
    },
}


def check_components(components: int | None) -> int:
    """A graph space's component count: None is the default (``GRAPH_SPACE_COMPONENTS``), 0
    keeps every column; a negative count is a ``UsageError``."""
    if components is None:
        return GRAPH_SPACE_COMPONENTS
    if components < 0:
        raise UsageError(
            f"--head-components must be 0 (every column) or more, got {components}",
            hint=f"the default keeps {GRAPH_SPACE_COMPONENTS}",
        )
    return int(components)


def check_head(kind: str) -> str:
    """``kind`` normalised, or ``UsageError`` naming the choices."""
    name = kind.strip().lower()
    if name not in HEAD_KINDS:
        raise UsageError(f"unknown head {kind!r}", hint=f"use one of {', '.join(HEAD_KINDS)}")
    return name


@dataclass(frozen=True)
class HeadSpace:
    """The rows a head of ``kind`` trains and predicts on, for one pool.

    ``pool``: the pool's features in that space (the raw embeddings, or [x, neighbours' mean]);
    ``scaler``: fitted on them; ``raw``: the pool rows a new row's neighbours contribute
    (the embeddings, power-normalised for ``graph``); ``graph``: the kNN graph (``graph``
    kind only); ``power``: whether rows are square-rooted first (``graph`` kind only).
    """

    kind: str
    pool: NDArray[Any]
    scaler: Scaler
    raw: NDArray[Any]
    graph: PoolGraph | None = None
    power: bool = False
    projection: Projection | None = None

    def rows_for(self, X: ArrayLike) -> NDArray[Any]:
        """Rows outside the pool (an eval set) in this space."""
        if self.graph is None:
            return np.asarray(X)
        return self.project(self.graph_rows_for(X))

    def graph_rows_for(self, X: ArrayLike) -> NDArray[np.float32]:
        """Rows outside the pool as [own row, neighbours' mean], before ``project``
        (what a benchmark caches: it depends on the graph alone)."""
        if self.graph is None:
            raise UsageError(f"a {self.kind} head has no graph space")
        arr = np.asarray(X)
        own = _own_rows(arr, self.power)
        # beta 1: the mean of the neighbours in the pool alone (the row itself is `own`)
        return np.hstack([own, self.graph.smooth_new(arr, self.raw, 1.0)])

    def project(self, rows: NDArray[Any]) -> NDArray[Any]:
        """[own row, neighbours' mean] rows onto the space's components (as they are when
        the space keeps every column)."""
        return rows if self.projection is None else self.projection(rows)


@dataclass(frozen=True)
class Projection:
    """Rows standardized by ``scaler`` and projected on ``axes`` [d, k] (principal axes)."""

    scaler: Scaler
    axes: NDArray[np.float32]

    def __call__(
        self,
        rows: NDArray[Any],
        *,
        block: int = PROJECT_BLOCK_ROWS,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """The projected rows, block by block (no standardized copy of every row at once)."""
        n = rows.shape[0]
        if out is None:
            out = np.empty((n, self.axes.shape[1]), dtype=np.float32)
        for start in range(0, n, block):
            np.matmul(
                self.scaler.transform(rows[start : start + block]),
                self.axes,
                out=out[start : start + block],
            )
        return out


def head_space(
    kind: str,
    X: NDArray[Any],
    *,
    scaler: Scaler | None = None,
    graph: PoolGraph | None = None,
    backend: str = DEFAULT_BACKEND,
    cache: str | os.PathLike[str] | None = None,
    components: int | None = None,
) -> HeadSpace:
    """The space heads of ``kind`` live in over pool ``X`` (builds the graph when needed).

    ``backend``: the graph's (``alcli.learner.graph.GRAPH_BACKENDS``); ``cache``: a folder
    where the graph is kept between calls (``alcli.learner.graph_cache``; None: none);
    ``components``: principal components the graph space keeps (None: the default,
    ``GRAPH_SPACE_COMPONENTS``; 0: all 2d columns, unprojected). The space is [n, components]
    float32, beside ``X`` and its power-normalised copy (the rows a new row's neighbours are
    read from).
    """
    kind = check_head(kind)
    components = check_components(components)
    if kind not in GRAPH_KINDS:
        return HeadSpace(kind, X, scaler if scaler is not None else fit_scaler(X), X)
    if graph is None:
        graph = cached_graph(X, directory=cache, backend=backend, scaler=scaler)
    power = bool(np.min(X) >= 0)
    n, d = X.shape
    if components == 0 or components >= 2 * d:
        full = np.empty((n, 2 * d), dtype=np.float32)
        if power:
            power_normalise(X, out=full[:, :d])
        else:
            full[:, :d] = X
        graph.smooth_pool(full[:, :d], 1.0, out=full[:, d:])
        return HeadSpace(kind, full, fit_scaler(full), full[:, :d], graph, power)
    # the two halves apart, never one [n, 2d] array: at 1M rows that is 10 GB more at the peak
    raw = power_normalise(X) if power else np.asarray(X, dtype=np.float32)
    smooth = graph.smooth_pool(raw, 1.0)
    own, mean = fit_scaler(raw), fit_scaler(smooth)  # per column: the [x, mean] array's
    scaler = Scaler(np.concatenate([own.mean, mean.mean]), np.concatenate([own.scale, mean.scale]))
    sample = np.unique(np.linspace(0, n - 1, num=min(n, PCA_ROWS)).astype(np.int64))
    projection = Projection(
        scaler, principal_axes(np.hstack([raw[sample], smooth[sample]]), scaler, components)
    )
    pool = np.empty((n, components), dtype=np.float32)
    for start in range(0, n, PROJECT_BLOCK_ROWS):
        stop = start + PROJECT_BLOCK_ROWS
        projection(np.hstack([raw[start:stop], smooth[start:stop]]), out=pool[start:stop])
    del smooth
    # centred by the full space's scaler and not rescaled: the penalty stays the full space's
    identity = Scaler(np.zeros(components, np.float32), np.ones(components, np.float32))
    return HeadSpace(kind, pool, identity, raw, graph, power, projection)


def _own_rows(X: ArrayLike, power: bool) -> NDArray[np.float32]:
    """The row's own half of the graph space: square-rooted when ``power``, else as float32."""
    return power_normalise(X) if power else np.asarray(X, dtype=np.float32)


def power_normalise(
    X: ArrayLike, block: int = 8192, *, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """sign(x)·√|x| as float32, block by block (Perronnin et al., ECCV 2010), into ``out``.

    Written in place in ``out`` as √|x| with x's sign copied back: the same bits as the
    product, without its three block-sized temporaries (50k x 1280 float32: 0.27 s, was 2.42
    with 65,536-row blocks; a scratch timing, session 12)."""
    arr = np.asarray(X)
    if out is None:
        out = np.empty(arr.shape, dtype=np.float32)
    alias = np.may_share_memory(arr, out)  # in place: keep the signs before overwriting
    for start in range(0, arr.shape[0], block):
        part = arr[start : start + block].astype(np.float32, copy=alias)
        root = out[start : start + block]
        np.abs(part, out=root)
        np.sqrt(root, out=root)
        np.copysign(root, part, out=root)
        root += 0.0  # −0 to +0, as the product gives (sign(−0) is 0)
    return out


def fit_head(
    space: HeadSpace,
    rows: Sequence[int] | NDArray[np.int64],
    labels: Sequence[Hashable],
    *,
    l2: float = 1.0,
    init: Head | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Head:
    """The head of ``space.kind`` on pool ``rows`` with ``labels``, started from ``init``
    (at most ``max_iter`` L-BFGS iterations per fit)."""
    return fit_head_steps(space, rows, labels, l2=l2, init=init, max_iter=max_iter)[1]


def fit_head_steps(
    space: HeadSpace,
    rows: Sequence[int] | NDArray[np.int64],
    labels: Sequence[Hashable],
    *,
    l2: float = 1.0,
    init: Head | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
) -> tuple[Head, Head]:
    """``fit_head``'s first step (the head on the labeled rows alone) and its result (the
    same head for kinds that do not self-train): the agent keeps the first step, which is
    the next round's evidence base, instead of fitting it again."""
    rows_arr = np.asarray(rows, dtype=np.int64)
    labeled = train_head(
        space.pool, labels, rows=rows_arr, l2=l2, scaler=space.scaler, init=init, max_iter=max_iter
    )
    settings = dict(SELFTRAIN.get(space.kind, {}))
    if not settings or len(labeled.classes) < 2:
        return labeled, labeled
    weighting = settings.pop("weight", "equal")
    agree = settings.pop("agree", False)
    refits = settings.pop("refits", 1)
    if settings.pop("count_labeled", False):  # the cap counts the bought labels too
        settings["max_rows"] = max(0, settings["max_rows"] - len(rows_arr))
    bought = np.asarray(labels)
    # label spreading reads only the graph and the bought labels: the same for every refit
    spread = None
    if agree and space.graph is not None:
        spread = label_spreading(space.graph, rows_arr, labels, labeled.classes)
    head = labeled
    for _ in range(refits):
        extra, extra_labels = pseudo_labels(head, space.pool, rows_arr, **settings)
        if spread is not None and len(extra):
            keep = spread[extra] == extra_labels
            extra, extra_labels = extra[keep], extra_labels[keep]
        if not len(extra):
            return labeled, head
        all_rows = np.concatenate([rows_arr, extra])
        all_labels = np.concatenate([bought, extra_labels])
        weight = None
        if weighting == "balanced":
            weight = np.ones(len(all_rows), dtype=np.float32)
            weight[: len(rows_arr)] = len(extra) / len(rows_arr)
        head = train_head(
            space.pool,
            all_labels,
            rows=all_rows,
            l2=l2,
            scaler=space.scaler,
            init=head,
            max_iter=max_iter,
            sample_weight=weight,
        )
    return labeled, head


def label_spreading(
    graph: PoolGraph,
    rows: NDArray[np.int64],
    labels: Sequence[Hashable],
    classes: NDArray[Any],
    *,
    alpha: float = 0.99,
) -> NDArray[Any]:
    """Each pool row's label by label spreading over the kNN graph (Zhou et al., NIPS 2003).

    F = (1 − α)(I − αS)⁻¹Y with S = D^-½ W D^-½, W the symmetrised graph, Y the labeled rows'
    one-hot labels (α = 0.99, the paper's), solved by conjugate gradients (I − αS is
    symmetric positive definite); the argmax of each row of F, as a label of ``classes``.
    """
    from scipy.sparse import csr_matrix, diags
    from scipy.sparse.linalg import cg

    n, k = graph.neighbors.shape
    A = csr_matrix(
        (
            graph.weights.ravel().astype(np.float64),
            graph.neighbors.ravel(),
            np.arange(0, n * k + 1, k),
        ),
        shape=(n, n),
    )
    W = A + A.T
    d = np.asarray(W.sum(axis=1)).ravel()
    inv = diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
    system = diags(np.ones(n)) - alpha * (inv @ W @ inv)
    position = {label: j for j, label in enumerate(np.asarray(classes).tolist())}
    codes = np.array([position[label] for label in np.asarray(labels).tolist()])
    F = np.zeros((n, len(classes)))
    for c in range(len(classes)):
        y = np.zeros(n)
        y[np.asarray(rows)[codes == c]] = 1.0
        F[:, c], _ = cg(system, y, rtol=1e-6, maxiter=1000)
    return np.asarray(classes)[F.argmax(axis=1)]


def pseudo_labels(
    head: Head,
    pool: NDArray[Any],
    labeled: NDArray[np.int64],
    *,
    threshold: float = SELFTRAIN_THRESHOLD,
    ratio: int | None = SELFTRAIN_RATIO,
    max_rows: int | None = None,
    balance: str | None = None,
    spread: bool = False,
) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Unlabeled rows ``head`` is sure of, and their predicted labels (see the module doc).

    With ``ratio`` None every row at ``threshold`` or above counts, whatever its class, up to
    ``max_rows`` of the most confident (ties to the lower row), or with ``spread`` every k-th
    of them by confidence rank, so the cap keeps the whole range. ``balance="prior"`` keeps as
    many rows, split over the classes as the head's mean predicted probability over the
    unlabeled pool (its estimate of the class prior), each class's most confident first."""
    probs = head.predict_proba(pool)
    confidence = probs.max(axis=1)
    predicted = probs.argmax(axis=1)
    confidence[labeled] = -1.0
    if ratio is None:
        extra = np.flatnonzero(confidence >= threshold)
        if max_rows is not None and len(extra) > max_rows:
            ranked = extra[np.argsort(-confidence[extra], kind="stable")]
            if spread:  # every k-th by confidence: the whole confident range, not its top
                extra = ranked[np.linspace(0, len(ranked) - 1, max_rows).round().astype(np.int64)]
            else:
                extra = ranked[:max_rows]
        if balance == "prior":
            unlabeled = confidence >= 0
            prior = probs[unlabeled].mean(axis=0, dtype=np.float64)
            quota = np.floor(prior / prior.sum() * len(extra)).astype(np.int64)
            chosen = []
            for c in range(len(head.classes)):
                members = np.flatnonzero((predicted == c) & unlabeled)
                order = np.argsort(-confidence[members], kind="stable")
                chosen.append(members[order[: quota[c]]])
            extra = np.concatenate(chosen)
        extra = np.sort(extra).astype(np.int64)
        return extra, head.classes[predicted[extra]]
    n_classes = len(head.classes)
    per_class = max(1, ratio * len(labeled) // n_classes)
    chosen = []
    for c in range(n_classes):
        members = np.flatnonzero((predicted == c) & (confidence >= threshold))
        order = np.argsort(-confidence[members], kind="stable")
        chosen.append(members[order[:per_class]])
    extra = np.sort(np.concatenate(chosen)).astype(np.int64)
    return extra, head.classes[predicted[extra]]
