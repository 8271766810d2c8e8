"""Hybrid sampling: uncertainty to find informative items, geometry to keep a batch diverse.

Plain top-b uncertainty picks near-duplicates in a large batch; these methods spend the
budget across the embedding space instead. All need a model trained on some labels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alcli._threads import single_threaded_blas

from ._distances import FloatArray, nearest, squared_distances, squared_norms
from ._kmeans import group_by_label, kmeans, nearest_member_per_cluster, sample_proportional
from ._select import Picks, SelectionContext, rank_unlabeled
from .registry import register
from .uncertainty import margin_scores

#: DBAL pre-filters the beta·b most uncertain items (Zhdanov 2019 uses beta = 10).
DBAL_BETA = 10
#: Cluster-Margin's margin candidates: this many times the budget.
CLUSTER_MARGIN_CANDIDATES = 10
#: Hierarchical clustering is O(m²) in memory; above this many candidates it runs on a
#: seeded subsample and every other candidate joins its nearest subsampled item's cluster.
CLUSTER_MARGIN_HAC_MAX = 3_000

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def _lowest_margin(ctx: SelectionContext, count: int) -> Picks:
    """The ``count`` unlabeled items of smallest margin (ties: lower index), and margins."""
    return rank_unlabeled(ctx, margin_scores(ctx.require_probs()), largest=False, count=count)


@register(
    "dbal",
    family="hybrid",
    needs={"probs", "embeddings", "labeled"},
    cost="O(n·C) + weighted k-means on 10·b items: O(10·b²·d·iterations)",
    reference="Zhdanov, Diverse mini-batch Active Learning, arXiv:1901.05954, 2019",
    aliases=("diverse_mini_batch", "wkmeans"),
)
def dbal(ctx: SelectionContext) -> Picks:
    """Weighted k-means over the 10·b lowest-margin items; the item nearest each centre.

    Weights are the informativeness 1 - margin, so centres lean toward uncertain items.
    Picks come most uncertain first; score = margin.
    """
    candidates, margins = _lowest_margin(ctx, DBAL_BETA * ctx.budget)
    if candidates.size <= ctx.budget:
        return Picks(candidates, margins)
    weights = np.clip(1.0 - margins, 0.0, None)
    result = kmeans(ctx.require_embeddings()[candidates], ctx.budget, ctx.rng, weights=weights)
    _, members = nearest_member_per_cluster(result, ctx.budget)
    if members.size < ctx.budget:  # duplicates left clusters empty: next most uncertain
        spare = np.setdiff1d(np.arange(candidates.size), members)
        members = np.concatenate([members, spare[: ctx.budget - members.size]])
    order = np.lexsort((candidates[members], margins[members]))
    chosen = members[order]
    return Picks(candidates[chosen], margins[chosen])


@register(
    "badge",
    family="hybrid",
    needs={"probs", "embeddings", "labeled"},
    cost="O(b·n·(d + C)) worst case, without materialising the n x (C·d) gradients",
    reference="Ash, Zhang, Krishnamurthy, Langford & Agarwal, Deep Batch Active Learning "
    "by Diverse, Uncertain Gradient Lower Bounds, ICLR 2020",
)
def badge(ctx: SelectionContext) -> Picks:
    """k-means++ seeding on last-layer gradient embeddings g = (p - onehot(argmax p)) ⊗ x.

    As in the authors' code, the first pick is the largest gradient norm (ties: lower
    index) and each next one is drawn with probability proportional to its squared
    distance to the nearest pick so far; score = that squared distance (the first pick's
    is its squared norm). Gradients are never built: <g_i, g_j> = <p̃_i, p̃_j><x_i, x_j>,
    so one distance update costs O(n·(C + d)), and rows whose Cauchy-Schwarz lower bound
    already exceeds their current distance are skipped.
    """
    probs = ctx.require_probs()
    x = ctx.require_embeddings()
    residual = probs.astype(np.float64)  # p̃ = p - onehot(argmax p)
    residual[np.arange(ctx.n), np.argmax(probs, axis=1)] -= 1.0
    p_sq = squared_norms(residual)
    x_sq = squared_norms(x).astype(np.float64)
    x_norm = np.sqrt(x_sq)
    g_sq = p_sq * x_sq

    d2 = np.zeros(ctx.n)
    d2[ctx.unlabeled] = np.inf
    picks = np.empty(ctx.budget, dtype=np.int64)
    scores = np.empty(ctx.budget)
    first = rank_unlabeled(ctx, g_sq, largest=True, count=1)
    picks[0], scores[0] = first.indices[0], first.scores[0]
    with single_threaded_blas():
        _badge_seeding(ctx, picks, scores, d2, residual, x, x_norm, g_sq)
    return Picks(picks, scores)


def _badge_seeding(
    ctx: SelectionContext,
    picks: I64,
    scores: F64,
    d2: F64,
    residual: F64,
    x: FloatArray,
    x_norm: F64,
    g_sq: F64,
) -> None:
    """D² sampling of picks[1:] in place (k-means++ on the gradient embeddings)."""
    for t in range(1, ctx.budget + 1):
        centre = int(picks[t - 1])
        d2[centre] = 0.0
        if t == ctx.budget:
            break
        _lower_gradient_distances(d2, centre, residual, x, x_norm, g_sq)
        if float(d2.sum()) > 0:
            nxt = sample_proportional(d2, ctx.rng)
        else:  # everything left duplicates a pick: lowest free index
            nxt = int(ctx.unpicked(picks[:t])[0])
        picks[t], scores[t] = nxt, d2[nxt]


def _lower_gradient_distances(
    d2: F64,
    centre: int,
    residual: F64,
    x: FloatArray,
    x_norm: F64,
    g_sq: F64,
) -> None:
    """d2 = min(d2, ||g_i - g_c||²) for rows still in play, via the factorised inner product."""
    p_dot = residual @ residual[centre]
    # ||g_i - g_c||² >= g_i² + g_c² - 2 |<p̃_i,p̃_c>| ||x_i|| ||x_c||  (Cauchy-Schwarz on x)
    bound = g_sq + g_sq[centre] - 2.0 * np.abs(p_dot) * x_norm * x_norm[centre]
    rows = np.flatnonzero(bound < d2)
    if rows.size == 0:
        return
    x_dot = (x[rows] @ x[centre]).astype(np.float64)
    new = g_sq[rows] + g_sq[centre] - 2.0 * p_dot[rows] * x_dot
    np.maximum(new, 0.0, out=new)
    d2[rows] = np.minimum(d2[rows], new)


@register(
    "cluster_margin",
    family="hybrid",
    needs={"probs", "embeddings", "labeled"},
    cost="O(n·C) + HAC on min(10·b, 3000) items: O(m²·d) + O(10·b·m·d) assignment",
    reference="Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh & Kumar, "
    "Batch Active Learning at Scale, NeurIPS 2021",
)
def cluster_margin(ctx: SelectionContext) -> Picks:
    """Round-robin over clusters of the 10·b lowest-margin items, smallest clusters first.

    Candidates are clustered by average-linkage HAC (Euclidean) cut into min(b, m)
    clusters; above 3,000 candidates HAC runs on a seeded subsample and the rest join the
    cluster of their nearest subsampled item. Each round takes one uniformly random
    remaining member from every cluster, in ascending cluster size (ties: the cluster's
    lowest index), as in the paper. Score = margin.
    """
    candidates, margins = _lowest_margin(ctx, CLUSTER_MARGIN_CANDIDATES * ctx.budget)
    if candidates.size <= ctx.budget:
        return Picks(candidates, margins)
    x = ctx.require_embeddings()[candidates]
    labels = _hac_labels(x, ctx.budget, ctx.rng)
    n_clusters = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=n_clusters)
    lowest = np.full(n_clusters, np.iinfo(np.int64).max)
    np.minimum.at(lowest, labels, candidates)
    members = group_by_label(labels, sizes)
    queues = [ctx.rng.permutation(members[c]) for c in np.lexsort((lowest, sizes)) if sizes[c] > 0]
    # round robin: every queue's first member, then every queue's second, ...
    rounds = range(max(queue.size for queue in queues))
    chosen = [int(queue[depth]) for depth in rounds for queue in queues if depth < queue.size]
    picked = np.asarray(chosen[: ctx.budget], dtype=np.int64)
    return Picks(candidates[picked], margins[picked])


def _hac_labels(x: FloatArray, n_clusters: int, rng: np.random.Generator) -> I64:
    """Average-linkage cluster labels (0..k-1) of every row, HAC on at most HAC_MAX rows."""
    # Imported here: scipy.cluster costs a third of a second, which every `alcli select`
    # would otherwise pay at startup for a strategy it rarely runs.
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    m = x.shape[0]
    if m > CLUSTER_MARGIN_HAC_MAX:
        sample = np.sort(rng.choice(m, size=CLUSTER_MARGIN_HAC_MAX, replace=False))
    else:
        sample = np.arange(m)
    xs = x[sample].astype(np.float64)
    distances = np.sqrt(squared_distances(xs, xs))
    np.fill_diagonal(distances, 0.0)
    distances = np.maximum(distances, distances.T)  # exact symmetry for squareform
    tree = linkage(squareform(distances, checks=False), method="average")
    sample_labels = fcluster(tree, t=min(n_clusters, sample.size), criterion="maxclust") - 1
    if sample.size == m:
        return sample_labels.astype(np.int64)
    nearest_sample, _ = nearest(x, xs.astype(x.dtype))
    return sample_labels[nearest_sample].astype(np.int64)
