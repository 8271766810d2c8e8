"""Diversity (representativeness) sampling on embeddings alone; all usable at cold start.

None of these needs a trained model, so they are the answer when there are no labels yet.
All distances are Euclidean and computed in blocks; no n x n matrix is ever built.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from alcli._threads import single_threaded_blas

from ._distances import (
    FloatArray,
    kth_neighbour_distance,
    mean_knn_distance,
    row_chunks,
    squared_distances,
    squared_norms,
)
from ._kcenter import greedy_k_center
from ._kmeans import group_by_label, kmeans, nearest_member_per_cluster
from ._select import Picks, SelectionContext
from .registry import register

#: TypiClust constants from the authors' implementation (Hacohen et al. 2022).
TYPICLUST_NEIGHBOURS = 20
TYPICLUST_MIN_CLUSTER_SIZE = 5
TYPICLUST_MAX_CLUSTERS = 500
#: Typicality of a bigger cluster is estimated on a seeded subsample of this many members.
TYPICALITY_MAX_MEMBERS = 1_000

#: ProbCover: δ is the median distance to the PROBCOVER_NEIGHBOURS-th nearest neighbour.
PROBCOVER_NEIGHBOURS = 20
PROBCOVER_DELTA_QUERIES = 500
#: The ball graph is built on a seeded subsample of at most this many unlabeled items
#: (or 2 x budget if larger); building it costs O(m²·d).
PROBCOVER_MAX_ITEMS = 8_000


@register(
    "coreset",
    family="diversity",
    needs={"embeddings"},
    cost="O(b·n·d) worst case, far less on clustered data (exact pruning)",
    reference="Sener & Savarese, Active Learning for Convolutional Neural Networks: "
    "A Core-Set Approach, ICLR 2018",
    aliases=("kcenter", "k_center", "k_center_greedy"),
)
def coreset(ctx: SelectionContext) -> Picks:
    """Greedy k-center: repeatedly the item farthest from every labeled or picked item.

    Exact (Euclidean), seeded from the labeled items, or from the item nearest the mean
    when there are none (its score is NaN). Score: the pick's distance to its nearest
    centre at the time it was picked. Triangle-inequality pruning skips whole groups of
    items that the new centre cannot affect, so it is exact yet much faster than the
    one-matrix-vector-product-per-pick loop on clustered embeddings (see ``_kcenter``).
    """
    picks, scores = greedy_k_center(ctx.require_embeddings(), ctx.labeled, ctx.budget)
    return Picks(picks, scores)


@register(
    "kmeans",
    family="diversity",
    needs={"embeddings"},
    cost="O(n·b·d·iterations) on a subsample of max(10⁴, 16·b) rows + one O(n·b·d) pass",
    reference="Lloyd 1982; Arthur & Vassilvitskii, k-means++, SODA 2007; as an AL baseline "
    "e.g. Zhdanov 2019",
    aliases=("k_means", "kmeans_sampling"),
)
def kmeans_sampling(ctx: SelectionContext) -> Picks:
    """The unlabeled item nearest each of ``budget`` k-means centres of the unlabeled pool.

    On pools larger than max(10⁴, 16·b) unlabeled items, k-means (and so the choice of the
    nearest item) runs on a seeded subsample of that size, which saves an O(n·b·d) pass.
    Picks come largest cluster first (ties: lower index); score = the cluster's share of
    the items clustered. If duplicates leave clusters empty, the rest are the items
    farthest from their centre (score NaN).
    """
    result = kmeans(
        ctx.require_embeddings(), ctx.budget, ctx.rng, assign_all=False, rows=ctx.unlabeled
    )
    clusters, members = nearest_member_per_cluster(result, ctx.budget)
    counts = np.bincount(result.labels, minlength=ctx.budget)[clusters]
    order = np.lexsort((members, -counts))
    chosen = members[order]
    scores = counts[order] / result.rows.size
    if chosen.size < ctx.budget:
        spare = ~np.isin(result.rows, chosen)
        far = np.lexsort((result.rows[spare], -result.sq_distances[spare]))
        extra = result.rows[spare][far][: ctx.budget - chosen.size]
        chosen = np.concatenate([chosen, extra])
        scores = np.concatenate([scores, np.full(extra.size, np.nan)])
    return Picks(chosen, scores.astype(np.float64))


@register(
    "typiclust",
    family="diversity",
    needs={"embeddings"},
    cost="O(n·k·d·iterations) k-means (k = min(|L|+b, 500)) + O(Σ m_c²·d) typicality",
    reference="Hacohen, Dekel & Weinshall, Active Learning on a Budget: Opposite "
    "Strategies Suit High and Low Budgets, ICML 2022",
    aliases=("typical_clustering",),
)
def typiclust(ctx: SelectionContext) -> Picks:
    """The most typical item of each of the largest clusters not yet covered by labels.

    As in the authors' code: k-means into min(|L| + b, 500) clusters of the whole pool;
    clusters ordered by fewest labeled members, then largest; clusters of 5 items or fewer
    are used only when the others run out; round-robin over that order, each time taking
    the unlabeled member with the highest typicality = 1 / (mean distance to its
    min(20, m/2) nearest unlabeled cluster-mates). Score: that typicality. Clusters larger
    than 1,000 members rank a seeded subsample of 1,000 of them (O(m²·d) otherwise).
    """
    x = ctx.require_embeddings()
    k = max(1, min(ctx.n_labeled + ctx.budget, TYPICLUST_MAX_CLUSTERS, ctx.n))
    result = kmeans(x, k, ctx.rng)
    labels = result.labels
    sizes = np.bincount(labels, minlength=k)
    covered = np.bincount(labels[ctx.labeled], minlength=k)
    lowest_row = np.full(k, ctx.n, dtype=np.int64)
    np.minimum.at(lowest_row, labels, np.arange(ctx.n))
    order = np.lexsort((lowest_row, -sizes, covered))
    order = order[sizes[order] > 0]
    large = order[sizes[order] > TYPICLUST_MIN_CLUSTER_SIZE]
    small = order[sizes[order] <= TYPICLUST_MIN_CLUSTER_SIZE]
    with single_threaded_blas():
        return _round_robin_typical(ctx, x, group_by_label(labels, sizes), (large, small))


def _round_robin_typical(
    ctx: SelectionContext,
    x: FloatArray,
    members: list[npt.NDArray[np.int64]],
    tiers: tuple[npt.NDArray[np.int64], ...],
) -> Picks:
    """Visit clusters tier by tier in order, cycling, taking each one's most typical item.

    A cluster's typicality ranking is computed on its first visit and reused on later ones
    (the authors recompute it without the items already taken; the ranking barely moves).
    """
    available = ~ctx.labeled
    ranked: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
    picks: list[int] = []
    scores: list[float] = []

    def next_typical(cluster: int) -> tuple[int, float] | None:
        while True:
            if cluster not in ranked:
                free = members[cluster][available[members[cluster]]]
                if free.size == 0:
                    return None
                ranked[cluster] = _typicality_ranking(x, free, ctx.rng)
            rows, typicality = ranked[cluster]
            live = np.flatnonzero(available[rows])
            if live.size:
                return int(rows[live[0]]), float(typicality[live[0]])
            del ranked[cluster]  # its ranked subsample is used up: rank what is left

    for tier in tiers:
        while len(picks) < ctx.budget:
            progressed = False
            for cluster in tier:
                if len(picks) == ctx.budget:
                    break
                found = next_typical(int(cluster))
                if found is None:
                    continue
                picks.append(found[0])
                scores.append(found[1])
                available[found[0]] = False
                progressed = True
            if not progressed:
                break
    return Picks(np.asarray(picks, dtype=np.int64), np.asarray(scores))


def _typicality_ranking(
    x: FloatArray, members: npt.NDArray[np.int64], rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Members by decreasing typicality (ties: lower row), with their typicality."""
    if members.size > TYPICALITY_MAX_MEMBERS:
        members = np.sort(rng.choice(members, TYPICALITY_MAX_MEMBERS, replace=False))
    block = x[members]
    k = max(1, min(TYPICLUST_NEIGHBOURS, members.size // 2))
    spread = mean_knn_distance(block, block, k, self_positions=np.arange(members.size))
    typicality = 1.0 / (spread + 1e-5)
    order = np.lexsort((members, -typicality))
    return members[order], typicality[order]


@register(
    "probcover",
    family="diversity",
    needs={"embeddings"},
    cost="O(m²·d) ball graph on m = min(n, max(8000, 2b)) items + O(edges) greedy",
    reference="Yehuda, Dekel, Hacohen & Weinshall, Active Learning Through a Covering "
    "Lens, NeurIPS 2022",
    aliases=("prob_cover",),
)
def probcover(ctx: SelectionContext) -> Picks:
    """Greedy max coverage: the item whose δ-ball holds the most not-yet-covered items.

    δ: the paper tunes it by class purity of k-means pseudo-labels; we use a purity-free
    stand-in, the median distance from an item to its 20th nearest neighbour in the pool
    (estimated on 500 seeded queries), so a ball holds about 20 items: local enough to be
    class-pure on good embeddings, and independent of the budget. Items within δ of a
    labeled item start covered. The ball graph is built on a seeded subsample of at most
    max(8,000, 2·budget) unlabeled items (the neighbour rank is scaled by the sampling
    rate so δ still refers to the whole pool). Once everything is covered, the rest of
    the budget is drawn uniformly at random, as in the authors' code (score NaN); other
    picks score the number of items they newly cover.
    """
    x = ctx.require_embeddings()
    unlabeled = ctx.unlabeled
    m = min(unlabeled.size, max(PROBCOVER_MAX_ITEMS, 2 * ctx.budget))
    if m < unlabeled.size:
        sample = np.sort(ctx.rng.choice(unlabeled, size=m, replace=False))
    else:
        sample = unlabeled
    xs = x[sample]
    delta_sq = _probcover_delta(xs, unlabeled.size, ctx.rng) ** 2
    indptr, neighbours = _ball_graph(xs, delta_sq)
    covered = np.zeros(m, dtype=bool)
    labeled_rows = np.flatnonzero(ctx.labeled)
    for start in range(0, labeled_rows.size, 256):
        block = squared_distances(x[labeled_rows[start : start + 256]], xs)
        covered |= (block <= delta_sq).any(axis=0)
    degree = np.add.reduceat((~covered[neighbours]).astype(np.int64), indptr[:-1])

    picks: list[int] = []
    scores: list[float] = []
    while len(picks) < ctx.budget:
        best = int(np.argmax(degree))
        if degree[best] <= 0:
            break
        ball = neighbours[indptr[best] : indptr[best + 1]]
        fresh = ball[~covered[ball]]
        picks.append(int(sample[best]))
        scores.append(float(fresh.size))
        covered[fresh] = True
        # each newly covered item stops counting in every ball that holds it
        touched = np.concatenate([neighbours[indptr[j] : indptr[j + 1]] for j in fresh])
        degree -= np.bincount(touched, minlength=m)
    if len(picks) < ctx.budget:
        rest = ctx.rng.choice(ctx.unpicked(picks), size=ctx.budget - len(picks), replace=False)
        picks.extend(int(r) for r in rest)
        scores.extend([np.nan] * rest.size)
    return Picks(np.asarray(picks, dtype=np.int64), np.asarray(scores))


def _probcover_delta(xs: FloatArray, pool_unlabeled: int, rng: np.random.Generator) -> float:
    m = xs.shape[0]
    if m < 2:
        return 0.0
    queries = np.sort(rng.choice(m, size=min(m, PROBCOVER_DELTA_QUERIES), replace=False))
    rank = max(1, round(PROBCOVER_NEIGHBOURS * m / pool_unlabeled))
    return float(np.median(kth_neighbour_distance(xs[queries], xs, rank, queries)))


def _ball_graph(
    xs: FloatArray, delta_sq: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """CSR adjacency of the closed δ-balls (every item is in its own ball).

    Each unordered pair is computed once (upper triangle, half the work) and entered both
    ways, so the graph is exactly symmetric, which the greedy's degree updates rely on.
    """
    m = xs.shape[0]
    norms = squared_norms(xs)
    sources: list[npt.NDArray[np.int64]] = []
    targets: list[npt.NDArray[np.int64]] = []
    for rows in row_chunks(m, m):
        start = rows.start
        block = squared_distances(xs[rows], xs[start:], norms[rows], norms[start:])
        r, c = np.nonzero(block <= delta_sq)
        r += start
        c += start
        upper = c > r
        sources += [r[upper], c[upper]]
        targets += [c[upper], r[upper]]
    self_loops = np.arange(m, dtype=np.int64)
    src = np.concatenate([self_loops, *sources])
    dst = np.concatenate([self_loops, *targets])
    order = np.argsort(src, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=m))])
    return indptr.astype(np.int64), dst[order].astype(np.int64)
