"""Semi-supervised heads (graph, selftrain), the kNN graph, and the Laplace committee."""

from __future__ import annotations

import numpy as np
import pytest
from strategies.disagreement import mutual_information

from alcli.errors import UsageError
from alcli.learner import (
    HEAD_KINDS,
    build_graph,
    check_head,
    evaluate,
    fit_head,
    head_space,
    laplace_committee,
    train_committee,
    train_head,
)
from alcli.learner.graph import TOP_K_CHUNK, exact_knn, top_k
from alcli.learner.semisup import (
    GRAPH_SELFTRAIN_REFITS,
    SELFTRAIN,
    fit_head_steps,
    power_normalise,
    pseudo_labels,
)


def two_moons_like(
    n: int, d: int = 12, n_classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Elongated class clusters: a few labels leave the linear head unsure, the pool does not."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 3
    direction = rng.normal(size=(n_classes, d))
    y = np.arange(n) % n_classes
    t = rng.uniform(-3, 3, size=n)
    X = centers[y] + t[:, None] * direction[y] + rng.normal(size=(n, d)) * 0.6
    return X.astype(np.float32), y


def test_exact_knn_matches_brute_force_and_breaks_ties_by_row() -> None:
    rng = np.random.default_rng(1)
    P = rng.normal(size=(300, 8)).astype(np.float32)
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    nb, sims = exact_knn(P, P, 5, exclude_self=True)
    S = P @ P.T
    np.fill_diagonal(S, -np.inf)
    expected = np.argsort(-S, axis=1, kind="stable")[:, :5]
    assert (nb == expected).mean() > 0.99  # float32 GEMM vs full product may swap near-ties
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    assert not np.any(nb == np.arange(300)[:, None])
    # exact ties: duplicated points go to the lower row first
    Q = np.repeat(P[:1], 4, axis=0)
    nb, _ = exact_knn(Q[:1], Q, 3)
    assert nb.tolist() == [[0, 1, 2]]


def test_graph_is_deterministic_and_smoothing_mixes_neighbours() -> None:
    X, y = two_moons_like(600)
    a, b = build_graph(X, k=8, dim=6), build_graph(X, k=8, dim=6)
    np.testing.assert_array_equal(a.neighbors, b.neighbors)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_allclose(a.weights.sum(axis=1), 1, atol=1e-5)
    assert (y[a.neighbors] == y[:, None]).mean() > 0.9
    smooth = a.smooth_pool(X, beta=1.0)
    manual = np.einsum("nk,nkd->nd", a.weights, X[a.neighbors])
    np.testing.assert_allclose(smooth, manual, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.smooth_pool(X, beta=0.0), X)
    # a new row equal to a pool row is smoothed over that row's neighbourhood (itself included)
    new = a.smooth_new(X[:3], X)
    assert new.shape == (3, X.shape[1])
    with pytest.raises(UsageError):
        a.smooth_pool(X[:10])
    with pytest.raises(UsageError, match="backend"):
        build_graph(X, backend="annoy")


def test_graph_head_beats_logistic_with_few_labels_on_clustered_data() -> None:
    X, y = two_moons_like(1600, seed=3)
    Xe, ye = X[1200:], y[1200:]
    pool, py = X[:1200], y[:1200]
    rows = np.random.default_rng(0).choice(len(pool), 12, replace=False)
    plain = head_space("logistic", pool)
    graph = head_space("graph", pool)
    acc_plain = evaluate(fit_head(plain, rows, py[rows]), Xe, ye).accuracy
    acc_graph = evaluate(fit_head(graph, rows, py[rows]), graph.rows_for(Xe), ye).accuracy
    assert acc_graph >= acc_plain


def test_selftrain_adds_confident_pseudo_labels_deterministically() -> None:
    X, y = two_moons_like(800, seed=5)
    space = head_space("selftrain", X)
    rows = np.arange(40)
    head = train_head(X[rows], y[rows], scaler=space.scaler)
    extra, labels = pseudo_labels(head, X, rows, threshold=0.9, ratio=5)
    assert len(extra)
    assert not set(extra) & set(rows.tolist())
    assert len(extra) <= 5 * 40
    assert (labels == y[extra]).mean() > 0.9
    a = fit_head(space, rows, y[rows])
    b = fit_head(space, rows, y[rows])
    np.testing.assert_array_equal(a.weights, b.weights)
    plain = train_head(X[rows], y[rows], scaler=space.scaler)
    assert not np.array_equal(a.weights, plain.weights)  # the pseudo-labels changed the head


def test_check_head_names_the_choices() -> None:
    assert check_head(" Graph ") == "graph"
    assert set(HEAD_KINDS) == {"logistic", "graph", "selftrain", "graph_selftrain"}
    with pytest.raises(UsageError, match="unknown head"):
        check_head("transformer")


def test_laplace_committee_is_seeded_and_disagrees_where_labels_are_few() -> None:
    X, y = two_moons_like(1000, seed=2)
    rows = np.arange(30)
    space = head_space("logistic", X)
    head = train_head(X[rows], y[rows], scaler=space.scaler)
    a = laplace_committee(head, X[rows], k=4, rng=np.random.default_rng(7), scaler=space.scaler)
    b = laplace_committee(head, X[rows], k=4, rng=np.random.default_rng(7), scaler=space.scaler)
    pa, pb = a.proba(X), b.proba(X)
    np.testing.assert_array_equal(pa, pb)
    assert pa.shape == (4, 1000, 4)
    np.testing.assert_allclose(pa.sum(axis=2), 1, atol=1e-4)
    mi = mutual_information(pa)
    assert mi.max() > 1e-3
    # more labels: a tighter posterior, so less disagreement on average
    many = np.arange(600)
    head_many = train_head(X[many], y[many], scaler=space.scaler)
    c = laplace_committee(
        head_many, X[many], k=4, rng=np.random.default_rng(7), scaler=space.scaler
    )
    assert mutual_information(c.proba(X)).mean() < mi.mean()


def test_bootstrap_committee_still_available() -> None:
    X, y = two_moons_like(300)
    members = train_committee(X[:60], y[:60], k=3, seed=0)
    assert members.proba(X).shape == (3, 300, 4)


def test_graph_space_is_each_row_next_to_its_neighbours_mean_power_normalised() -> None:
    X, _ = two_moons_like(500, seed=4)
    Xp = np.abs(X)  # non-negative, like a CNN's pooled ReLU features: square-rooted
    space = head_space("graph", Xp)
    d = X.shape[1]
    assert space.power
    assert space.pool.shape == (500, 2 * d)
    root = np.sqrt(Xp)
    np.testing.assert_allclose(space.pool[:, :d], root, rtol=1e-6)
    g = space.graph
    assert g is not None
    manual = np.einsum("nk,nkd->nd", g.weights, root[g.neighbors])
    np.testing.assert_allclose(space.pool[:, d:], manual, rtol=1e-5, atol=1e-5)
    new = space.rows_for(Xp[:7])
    assert new.shape == (7, 2 * d)
    np.testing.assert_allclose(new[:, :d], root[:7], rtol=1e-6)
    again = head_space("graph", Xp)
    np.testing.assert_array_equal(again.pool, space.pool)
    signed = head_space("graph", X)  # negative values: left as they are
    assert not signed.power
    np.testing.assert_array_equal(signed.pool[:, :d], X)


def test_graph_selftrain_refits_the_graph_head_on_every_confident_row() -> None:
    X, y = two_moons_like(600, seed=6)
    space = head_space("graph_selftrain", X)
    graph = head_space("graph", X, graph=space.graph)
    np.testing.assert_array_equal(space.pool, graph.pool)  # the same [x, neighbours' mean] rows
    rows = np.arange(40)
    base = fit_head(graph, rows, y[rows])
    extra, labels = pseudo_labels(base, space.pool, rows, threshold=0.9, ratio=None)
    assert len(extra) > 5 * 40  # no per-label cap
    assert not set(extra) & set(rows.tolist())
    assert (labels == y[extra]).mean() > 0.9
    capped, _ = pseudo_labels(base, space.pool, rows, threshold=0.9, ratio=None, max_rows=50)
    probs = base.predict_proba(space.pool).max(axis=1)
    assert len(capped) == 50
    assert probs[capped].min() >= np.sort(probs[extra])[-50]
    spread, spread_labels = pseudo_labels(
        base, space.pool, rows, threshold=0.9, ratio=None, max_rows=50, spread=True
    )
    assert len(spread) == 50 == len(np.unique(spread))
    assert set(spread) <= set(extra)
    # every k-th by confidence: the most and the least confident of the kept rows are both in
    ranked = extra[np.argsort(-probs[extra], kind="stable")]
    assert {ranked[0], ranked[-1]} <= set(spread.tolist())
    assert probs[spread].min() < np.sort(probs[extra])[-50]  # not the top 50
    np.testing.assert_array_equal(spread_labels, labels[np.searchsorted(extra, spread)])
    a = fit_head(space, rows, y[rows])
    b = fit_head(space, rows, y[rows])
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, base.weights)  # the pseudo-labels changed the head


def _refit_by_hand(space, rows, labels, head, max_rows):  # type: ignore[no-untyped-def]
    """One self-training refit of ``graph_selftrain`` written out: ``head``'s spread
    pseudo-labels (at most ``max_rows``) join the bought labels, refitted from ``head``."""
    extra, extra_labels = pseudo_labels(
        head,
        space.pool,
        rows,
        threshold=SELFTRAIN["graph_selftrain"]["threshold"],
        ratio=None,
        max_rows=max_rows,
        spread=True,
    )
    refit = train_head(
        space.pool,
        np.concatenate([labels, extra_labels]),
        rows=np.concatenate([rows, extra]),
        scaler=space.scaler,
        init=head,
    )
    return refit, extra


def test_graph_selftrain_pseudo_labels_again_from_each_refit() -> None:
    X, y = two_moons_like(600, seed=6)
    space = head_space("graph_selftrain", X)
    rows = np.arange(40)
    settings = SELFTRAIN["graph_selftrain"]
    assert settings["refits"] == GRAPH_SELFTRAIN_REFITS >= 2
    head = train_head(space.pool, y[rows], rows=rows, scaler=space.scaler)
    heads = []
    for _ in range(GRAPH_SELFTRAIN_REFITS):  # the chain fit_head is meant to run, by hand
        # the cap counts the bought labels
        head, _ = _refit_by_hand(space, rows, y[rows], head, settings["max_rows"] - len(rows))
        heads.append(head)
    fitted = fit_head(space, rows, y[rows])
    np.testing.assert_array_equal(fitted.weights, heads[-1].weights)
    np.testing.assert_array_equal(fitted.bias, heads[-1].bias)
    assert not np.array_equal(heads[0].weights, heads[-1].weights)  # the second refit counts


def test_graph_space_keeps_its_top_principal_components() -> None:
    X, y = two_moons_like(500, seed=4)
    Xp = np.abs(X)
    d = X.shape[1]
    full = head_space("graph", Xp, components=0)
    space = head_space("graph", Xp, graph=full.graph, components=8)
    assert space.pool.shape == (500, 8)
    assert space.projection is not None
    # the full space's rows, standardized by its scaler and projected on orthonormal axes
    np.testing.assert_allclose(space.projection.scaler.mean, full.scaler.mean, rtol=1e-5)
    np.testing.assert_allclose(space.projection.scaler.scale, full.scaler.scale, rtol=1e-5)
    np.testing.assert_allclose(space.pool, space.projection(full.pool), rtol=1e-4, atol=1e-4)
    axes = space.projection.axes
    np.testing.assert_allclose(axes.T @ axes, np.eye(8), atol=1e-5)
    variance = space.pool.var(axis=0)
    assert variance[0] == variance.max()
    assert variance[-1] < variance[0]
    np.testing.assert_array_equal(space.raw, full.raw)
    new = space.rows_for(Xp[:7])
    np.testing.assert_allclose(new, space.project(full.rows_for(Xp[:7])), rtol=1e-4, atol=1e-4)
    again = head_space("graph", Xp, graph=full.graph, components=8)
    np.testing.assert_array_equal(again.pool, space.pool)
    # every column or more (0: every column): the unprojected space; fewer than 0: an error
    every = head_space("graph", Xp, graph=full.graph, components=2 * d)
    np.testing.assert_array_equal(every.pool, full.pool)
    assert every.projection is None
    assert every.project(full.pool) is full.pool
    assert full.pool.shape == (500, 2 * d)
    with pytest.raises(UsageError, match="must be 0"):
        head_space("graph", Xp, graph=full.graph, components=-1)
    # heads train and predict in it, and lose little to the dropped directions
    rows = np.arange(60)
    head = fit_head(space, rows, y[rows])
    assert head.dim == 8
    kept = evaluate(head, space.pool, y).accuracy
    assert kept >= evaluate(fit_head(full, rows, y[rows]), full.pool, y).accuracy - 0.05


def test_fit_head_steps_gives_the_labeled_step_and_the_result() -> None:
    X, y = two_moons_like(600, seed=6)
    space = head_space("graph_selftrain", X)
    rows = np.arange(40)
    step, head = fit_head_steps(space, rows, y[rows])
    alone = train_head(space.pool, y[rows], rows=rows, scaler=space.scaler)
    np.testing.assert_array_equal(step.weights, alone.weights)
    np.testing.assert_array_equal(head.weights, fit_head(space, rows, y[rows]).weights)
    assert not np.array_equal(step.weights, head.weights)
    plain = head_space("graph", X, graph=space.graph)
    first, last = fit_head_steps(plain, rows, y[rows])
    assert first is last


def test_graph_selftrain_cap_counts_the_bought_labels(monkeypatch) -> None:
    X, y = two_moons_like(600, seed=6)
    space = head_space("graph_selftrain", X)
    rows = np.arange(40)
    settings = SELFTRAIN["graph_selftrain"]
    assert settings["count_labeled"]
    monkeypatch.setitem(SELFTRAIN, "graph_selftrain", {**settings, "max_rows": 40})
    step, head = fit_head_steps(space, rows, y[rows])
    assert head is step  # the bought labels fill the cap: nothing to self-train on
    monkeypatch.setitem(SELFTRAIN, "graph_selftrain", {**settings, "max_rows": 90, "refits": 1})
    _, head = fit_head_steps(space, rows, y[rows])
    refit, extra = _refit_by_hand(space, rows, y[rows], step, 50)
    assert len(extra) == 50
    np.testing.assert_array_equal(head.weights, refit.weights)


def test_power_normalise_is_the_signed_square_root_in_place_too() -> None:
    X = np.array([[-4.0, 9.0, 0.0, -0.25, -0.0], [1e-8, 2.0, -3.0, 16.0, 0.5]], np.float32)
    expected = np.sign(X) * np.sqrt(np.abs(X))
    out = power_normalise(X, block=1)
    np.testing.assert_array_equal(out.view(np.int32), expected.view(np.int32))  # same bits
    np.testing.assert_array_equal(
        power_normalise(X.astype(np.float16)),
        power_normalise(X.astype(np.float16).astype(np.float32)),
    )
    inplace = X.copy()
    power_normalise(inplace, block=1, out=inplace)  # signs read before they are overwritten
    np.testing.assert_array_equal(inplace, expected)


@pytest.mark.parametrize("m", [5, TOP_K_CHUNK, 3 * TOP_K_CHUNK + 7])
def test_top_k_is_a_stable_sort_of_each_row(m: int) -> None:
    """Many equal entries, within and across chunks: the k best, equal ones by lower column
    (what a stable sort of every entry gives), membership included."""
    rng = np.random.default_rng(m)
    S = rng.integers(0, 6, size=(40, m)).astype(np.float32)
    S[0] = 3.0  # a row of ties
    S[1, ::2] = -np.inf
    for k in (1, 4, min(m, 10)):
        columns, values = top_k(S, k)
        expected = np.argsort(-S, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(columns, expected)
        np.testing.assert_array_equal(values, np.take_along_axis(S, expected, axis=1))
