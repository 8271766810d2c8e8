"""The strategy zoo: one contract every registered strategy must meet, known answers per
family, the errors users see, exactness against naive references, and real entry-point
plugins (a dist-info directory on sys.path)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import alcli.strategies as strategies
from alcli.errors import StrategyError
from alcli.strategies import registry
from alcli.strategies._kmeans import _lloyd, kmeans_plus_plus
from alcli.strategies._select import top_k

ALL_NAMES = [info.name for info in strategies.available()]


def make_pool(
    n: int = 60,
    *,
    d: int = 5,
    classes: int = 3,
    members: int = 3,
    dtype: type = np.float64,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Blob embeddings and matching (noisy) probabilities and committee."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5, 5, size=(classes, d))
    y = np.arange(n) % classes
    embeddings = centres[y] + rng.standard_normal((n, d))
    logits = 1.5 * np.eye(classes)[y] + rng.standard_normal((n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    com_logits = 1.5 * np.eye(classes)[y][None] + rng.standard_normal((members, n, classes))
    committee = np.exp(com_logits) / np.exp(com_logits).sum(2, keepdims=True)
    return {
        "embeddings": embeddings.astype(dtype),
        "probs": probs.astype(dtype),
        "committee": committee.astype(dtype),
    }


def assert_valid(picks: np.ndarray, n: int, labeled: np.ndarray, expected: int) -> None:
    assert picks.dtype == np.int64
    assert picks.shape == (expected,)
    assert np.unique(picks).size == picks.size, "picks repeat an item"
    assert ((picks >= 0) & (picks < n)).all(), "picks outside the pool"
    assert not np.isin(picks, labeled).any(), "picked a labeled item"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_strategy_contract(name: str) -> None:
    """Every registered strategy, built-in or plugin, honours the documented contract."""
    pool = make_pool()
    labeled = np.array([0, 1, 2, 7, 11])
    n, unlabeled = 60, 60 - 5

    picks = strategies.run(name, budget=10, labeled=labeled, seed=3, **pool)
    assert_valid(picks, n, labeled, 10)

    # deterministic: same seed (int or Generator from it) -> same picks
    again = strategies.run(name, budget=10, labeled=labeled, seed=3, **pool)
    from_generator = strategies.run(
        name, budget=10, labeled=labeled, seed=np.random.default_rng(3), **pool
    )
    np.testing.assert_array_equal(picks, again)
    np.testing.assert_array_equal(picks, from_generator)

    # scores: one per pick, float64
    indices, scores = strategies.run_with_scores(name, budget=10, labeled=labeled, seed=3, **pool)
    np.testing.assert_array_equal(indices, picks)
    assert scores.dtype == np.float64
    assert scores.shape == (10,)

    # budget 0 -> empty; budget >= unlabeled count -> every unlabeled item once
    empty = strategies.run(name, budget=0, labeled=labeled, **pool)
    assert empty.dtype == np.int64
    assert empty.size == 0
    everything = strategies.run(name, budget=unlabeled + 7, labeled=labeled, **pool)
    assert_valid(everything, n, labeled, unlabeled)
    assert set(everything.tolist()) == set(range(n)) - set(labeled.tolist())

    # labeled as a mask or as indices means the same
    mask = np.zeros(n, dtype=bool)
    mask[labeled] = True
    np.testing.assert_array_equal(
        strategies.run(name, budget=10, labeled=mask, seed=3, **pool), picks
    )

    # float32 inputs work as well
    pool32 = make_pool(dtype=np.float32)
    assert_valid(strategies.run(name, budget=10, labeled=labeled, **pool32), n, labeled, 10)

    # tiny pools
    info = strategies.get(name)
    for size in (1, 2, 3):
        tiny = make_pool(size, seed=size)
        tiny_labeled = np.array([0])
        assert_valid(
            strategies.run(name, budget=5, labeled=tiny_labeled, **tiny),
            size,
            tiny_labeled,
            size - 1,
        )
        if info.cold_start:
            assert_valid(strategies.run(name, budget=5, **tiny), size, np.array([]), size)

    # a pool of identical items (all distances 0, all scores tied) still gives valid picks
    same = {k: np.broadcast_to(v[:1], v.shape).copy() for k, v in pool.items() if k != "committee"}
    same["committee"] = np.broadcast_to(pool["committee"][:, :1], pool["committee"].shape).copy()
    assert_valid(strategies.run(name, budget=12, labeled=labeled, **same), n, labeled, 12)

    # NaN in any array the strategy reads -> a clear error
    for key in info.needs - {"labeled"}:
        broken = {k: v.copy() for k, v in pool.items()}
        broken[key][..., 4, 0] = np.nan
        with pytest.raises(StrategyError, match="NaN"):
            strategies.run(name, budget=3, labeled=labeled, **broken)


# ----------------------------------------------------------------------------- uncertainty

HAND_PROBS = np.array(
    [
        [0.5, 0.3, 0.2],
        [0.9, 0.05, 0.05],
        [0.4, 0.4, 0.2],
        [1 / 3, 1 / 3, 1 / 3],
        [0.6, 0.2, 0.2],
        [0.2, 0.2, 0.6],  # labeled
    ]
)


@pytest.mark.parametrize(
    ("name", "order", "expected_scores"),
    [
        ("least_confidence", [3, 2, 0, 4, 1], [2 / 3, 0.6, 0.5, 0.4, 0.1]),
        ("margin", [2, 3, 0, 4, 1], [0.0, 0.0, 0.2, 0.4, 0.85]),
        ("ratio", [2, 3, 0, 4, 1], [1.0, 1.0, 0.6, 1 / 3, 0.05 / 0.9]),
    ],
)
def test_uncertainty_known_answers(
    name: str, order: list[int], expected_scores: list[float]
) -> None:
    picks, scores = strategies.run_with_scores(name, budget=5, probs=HAND_PROBS, labeled=[5])
    assert picks.tolist() == order
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-12, atol=1e-15)


def test_entropy_known_answer() -> None:
    picks, scores = strategies.run_with_scores("entropy", budget=5, probs=HAND_PROBS, labeled=[5])
    p = HAND_PROBS[:5]
    expected = -(p * np.log(p)).sum(axis=1)
    assert picks.tolist() == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose(scores, expected[picks], rtol=1e-12)
    assert scores[0] == pytest.approx(np.log(3))  # uniform row: ln C nats


def test_ties_go_to_the_lower_index() -> None:
    flat = np.full((8, 4), 0.25)
    for name in ("least_confidence", "margin", "ratio", "entropy"):
        assert strategies.run(name, budget=4, probs=flat, labeled=[1]).tolist() == [0, 2, 3, 4]


def test_blas_threads_are_restored() -> None:
    from alcli._threads import _openblas_controls, single_threaded_blas

    controls = _openblas_controls()
    if not controls:
        pytest.skip("numpy is not linked to OpenBLAS here")
    before = [get() for get, _ in controls]
    with single_threaded_blas(), single_threaded_blas():
        assert all(get() == 1 for get, _ in controls)
    assert [get() for get, _ in controls] == before


def test_top_k_is_tie_stable_at_the_cut() -> None:
    scores = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 2.0])
    assert top_k(scores, 3, largest=True).tolist() == [4, 1, 2]
    assert top_k(scores, 2, largest=False).tolist() == [0, 1]
    assert top_k(scores, 10, largest=False).tolist() == [0, 1, 2, 3, 5, 4]


def test_one_class_model_is_all_ties() -> None:
    probs = np.ones((4, 1))
    picks, scores = strategies.run_with_scores("margin", budget=2, probs=probs, labeled=[0])
    assert picks.tolist() == [1, 2]
    assert scores.tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------- disagreement


def test_bald_and_vote_entropy_known_answers() -> None:
    agree = [[1.0, 0.0], [1.0, 0.0]]
    split = [[1.0, 0.0], [0.0, 1.0]]
    unsure = [[0.5, 0.5], [0.5, 0.5]]
    committee = np.array([agree, split, unsure, agree]).transpose(1, 0, 2)  # K x n x C
    picks, scores = strategies.run_with_scores("bald", budget=3, committee=committee, labeled=[3])
    assert picks.tolist() == [1, 0, 2]
    np.testing.assert_allclose(scores, [np.log(2), 0.0, 0.0], atol=1e-12)

    picks, scores = strategies.run_with_scores(
        "vote_entropy", budget=3, committee=committee, labeled=[3]
    )
    assert picks.tolist() == [1, 0, 2]  # unsure rows vote class 0 (argmax ties -> lower class)
    np.testing.assert_allclose(scores, [np.log(2), 0.0, 0.0], atol=1e-12)


# ------------------------------------------------------------------------------- diversity

LINE = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])


def test_coreset_on_a_line() -> None:
    picks, scores = strategies.run_with_scores("coreset", budget=5, embeddings=LINE)
    assert picks.tolist() == [3, 4, 0, 1, 2]  # nearest the mean (3.2) first; 1 and 2 tie
    np.testing.assert_allclose(scores[1:], [7.0, 3.0, 1.0, 1.0])
    assert np.isnan(scores[0])

    picks, scores = strategies.run_with_scores("kcenter", budget=4, embeddings=LINE, labeled=[0])
    assert picks.tolist() == [4, 3, 1, 2]
    np.testing.assert_allclose(scores, [10.0, 3.0, 1.0, 1.0])


def naive_k_center(x: np.ndarray, labeled: np.ndarray, budget: int) -> list[int]:
    """The textbook loop: full distances to every new centre, argmax (lowest index)."""
    x = x.astype(np.float64)
    nearest = np.full(x.shape[0], np.inf)
    for row in labeled:
        nearest = np.minimum(nearest, ((x - x[row]) ** 2).sum(axis=1))
    nearest[labeled] = -np.inf
    picks = []
    for t in range(budget):
        if t == 0 and labeled.size == 0:
            pick = int(np.argmin(((x - x.mean(axis=0)) ** 2).sum(axis=1)))
        else:
            pick = int(np.argmax(nearest))
        picks.append(pick)
        nearest = np.minimum(nearest, ((x - x[pick]) ** 2).sum(axis=1))
        nearest[pick] = -np.inf
    return picks


@pytest.mark.parametrize("n_labeled", [0, 25])
def test_coreset_matches_the_naive_loop(n_labeled: int) -> None:
    """Large enough (n > 2048) for the pruned, grouped path; the picks must not change."""
    rng = np.random.default_rng(11)
    centres = rng.uniform(-6, 6, size=(6, 12))
    x = centres[rng.integers(0, 6, 3000)] + rng.standard_normal((3000, 12))
    labeled = np.sort(rng.choice(3000, n_labeled, replace=False))
    expected = naive_k_center(x, labeled, 150)
    assert strategies.run("coreset", budget=150, embeddings=x, labeled=labeled).tolist() == expected
    picks32 = strategies.run(
        "coreset", budget=150, embeddings=x.astype(np.float32), labeled=labeled
    )
    assert np.intersect1d(picks32, expected).size >= 0.99 * 150


def test_kmeans_picks_the_middle_of_each_group() -> None:
    offsets = np.array([[0.0, 0.0], [0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])
    x = np.concatenate([offsets + c for c in ([0, 0], [50, 0], [0, 50])])
    picks = strategies.run("kmeans", budget=3, embeddings=x, seed=4)
    assert sorted(picks.tolist()) == [0, 5, 10]


def test_typiclust_picks_the_densest_item_of_each_cluster() -> None:
    rng = np.random.default_rng(2)
    core = rng.normal(scale=0.05, size=(12, 2))
    halo = rng.normal(scale=2.0, size=(6, 2))
    blob = np.concatenate([core, halo])
    x = np.concatenate([blob, blob * 1.1 + 100])
    picks = strategies.run("typiclust", budget=2, embeddings=x, seed=0)

    def most_typical(rows: np.ndarray) -> int:
        d = np.sqrt(((x[rows, None] - x[None, rows]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        k = min(20, rows.size // 2)
        spread = np.sort(d, axis=1)[:, :k].mean(axis=1)
        return int(rows[np.argmax(1 / (spread + 1e-5))])

    assert sorted(picks.tolist()) == [most_typical(np.arange(18)), most_typical(np.arange(18, 36))]
    assert all(p % 18 < 12 for p in picks)  # a core item, not the halo


def test_typiclust_prefers_clusters_without_labels() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 40])
    picks = strategies.run("typiclust", budget=1, embeddings=x, labeled=[0], seed=0)
    assert picks[0] >= 30  # the larger cluster already has a label


def test_probcover_covers_the_largest_uncovered_cluster_first() -> None:
    rng = np.random.default_rng(9)
    sizes = [60, 40, 30]
    x = np.concatenate([rng.normal(scale=0.3, size=(s, 8)) + 50 * i for i, s in enumerate(sizes)])
    cluster = np.repeat(np.arange(3), sizes)
    picks = strategies.run("probcover", budget=3, embeddings=x)
    assert cluster[picks].tolist() == [0, 1, 2]
    picks = strategies.run("probcover", budget=2, embeddings=x, labeled=np.arange(60))
    assert cluster[picks].tolist() == [1, 2]


# ---------------------------------------------------------------------------------- hybrid


def reference_badge(
    probs: np.ndarray, x: np.ndarray, labeled: np.ndarray, budget: int, seed: int
) -> list[int]:
    """BADGE with the n x (C·d) gradient embeddings built explicitly."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(probs.shape[1])[probs.argmax(axis=1)]
    g = ((probs - onehot)[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    d2 = np.full(len(x), np.inf)
    d2[labeled] = 0.0
    norms = (g**2).sum(axis=1)
    free = np.setdiff1d(np.arange(len(x)), labeled)
    picks = [int(free[np.argmax(norms[free])])]
    while len(picks) < budget:
        d2 = np.minimum(d2, ((g - g[picks[-1]]) ** 2).sum(axis=1))
        d2[picks[-1]] = 0.0
        cdf = np.cumsum(d2)
        picks.append(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")))
    return picks


def test_badge_matches_explicit_gradient_embeddings() -> None:
    pool = make_pool(80, d=6, classes=4, seed=8)
    labeled = np.array([3, 9, 40])
    expected = reference_badge(pool["probs"], pool["embeddings"], labeled, 12, seed=6)
    picks = strategies.run(
        "badge",
        budget=12,
        probs=pool["probs"],
        embeddings=pool["embeddings"],
        labeled=labeled,
        seed=6,
    )
    assert picks.tolist() == expected


def test_dbal_spreads_picks_over_uncertain_groups() -> None:
    rng = np.random.default_rng(1)
    groups = [rng.normal(scale=0.1, size=(10, 3)) + 30 * i for i in range(3)]
    x = np.concatenate(groups)
    probs = np.tile([0.9, 0.1], (30, 1))
    probs[:20] = [0.52, 0.48]  # groups 0 and 1 are uncertain, group 2 is confident
    picks = strategies.run("dbal", budget=2, probs=probs, embeddings=x, labeled=[29], seed=0)
    assert sorted((picks // 10).tolist()) == [0, 1]


def test_cluster_margin_goes_smallest_cluster_first() -> None:
    rng = np.random.default_rng(4)
    sizes = [6, 3, 1]
    x = np.concatenate([rng.normal(scale=0.1, size=(s, 2)) + 40 * i for i, s in enumerate(sizes)])
    x = np.concatenate([x, [[500.0, 500.0]]])  # the labeled item
    probs = np.tile([0.5, 0.5], (11, 1))
    picks = strategies.run("cluster_margin", budget=3, probs=probs, embeddings=x, labeled=[10])
    cluster = np.repeat(np.arange(3), sizes)
    assert cluster[picks].tolist() == [2, 1, 0]


# ---------------------------------------------------------------------------------- kmeans


def test_hamerly_lloyd_equals_plain_lloyd() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1500, 6))
    seeds = kmeans_plus_plus(x, 15, np.random.default_rng(5))
    centres = x[seeds]
    for _ in range(200):
        labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(axis=1)
        updated = np.array([x[labels == j].mean(axis=0) for j in range(15)])
        if np.array_equal(updated, centres):
            break
        centres = updated
    got_centres, got_labels, _ = _lloyd(x, 15, np.random.default_rng(5), None, 200, 0.0)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(got_centres, centres, atol=1e-12)


# ---------------------------------------------------------------------------------- errors


def test_your_own_model_needs_no_labels() -> None:
    """Probabilities passed in come from the caller's model (modAL, scikit-activeml): no
    labeled mask needed, for every strategy that reads a model's output."""
    pool = make_pool()
    model_based = [i for i in strategies.available() if i.needs & {"probs", "committee"}]
    assert {i.name for i in model_based} >= {"margin", "entropy", "bald", "badge"}
    for info in model_based:
        picks = strategies.run(info.name, budget=5, seed=1, **pool)
        assert_valid(picks, 60, np.array([], dtype=np.int64), 5)
    margins = strategies.run("margin", budget=3, probs=HAND_PROBS)
    assert margins.tolist() == [2, 3, 0]


def test_check_needs_works_without_arrays() -> None:
    assert strategies.check_needs("margin", {"probs"}).name == "margin"
    assert strategies.check_needs("K-Center", ["embeddings"]).name == "coreset"
    with pytest.raises(StrategyError, match=r"coreset needs embeddings.*margin"):
        strategies.check_needs("coreset", {"probs"})
    with pytest.raises(StrategyError, match="did you mean 'margin'"):
        strategies.check_needs("marginn", {"probs"})


def test_needs_unmet_say_why_and_what_instead() -> None:
    pool = make_pool()
    with pytest.raises(StrategyError, match=r"bald needs committee.*entropy"):
        strategies.run("bald", budget=5, probs=pool["probs"], labeled=[0])
    with pytest.raises(StrategyError, match="coreset needs embeddings"):
        strategies.run("coreset", budget=5, probs=pool["probs"])
    with pytest.raises(StrategyError, match="badge needs embeddings"):
        strategies.run("badge", budget=5, probs=pool["probs"], labeled=[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": -1}, "budget must be 0 or more"),
        ({"budget": 2.5}, "budget must be an integer"),
        ({"budget": 2, "labeled": [99]}, "outside the pool"),
        ({"budget": 2, "labeled": np.ones(3, dtype=bool)}, "labeled mask has 3"),
        ({"budget": 2, "seed": -3}, "seed must be"),
        ({"budget": 2, "probs": np.full((60, 3), 2.0)}, "not logits"),
        ({"budget": 2, "embeddings": np.zeros((59, 2))}, "disagree on the pool size"),
        ({"budget": 2, "probs": np.full(60, 1.0)}, "must have 2 dimensions"),
    ],
)
def test_bad_inputs_are_usage_errors(kwargs: dict, message: str) -> None:
    pool = make_pool()
    args = {"probs": pool["probs"], "labeled": [0], **kwargs}
    with pytest.raises(StrategyError, match=message) as caught:
        strategies.run("margin", **args)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)


def test_infinite_values_are_rejected_with_the_row() -> None:
    pool = make_pool()
    pool["embeddings"][17, 2] = np.inf
    with pytest.raises(StrategyError, match="row 17"):
        strategies.run("coreset", budget=2, embeddings=pool["embeddings"])


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(StrategyError, match="did you mean 'margin'"):
        strategies.run("margn", budget=1, probs=HAND_PROBS, labeled=[0])
    assert strategies.get("K-Center").name == "coreset"
    assert strategies.get("Least-Confidence").name == "least_confidence"


def test_available_matches_names_aliases_and_families() -> None:
    assert [i.name for i in strategies.available("*margin*")] == ["margin", "cluster_margin"]
    assert {i.name for i in strategies.available("uncertainty")} == {
        "least_confidence",
        "margin",
        "ratio",
        "entropy",
    }
    assert [i.name for i in strategies.available("kcenter")] == ["coreset"]
    builtin = [i for i in strategies.available() if i.family in registry.FAMILY_ORDER]
    cold = {i.name for i in builtin if i.cold_start}
    assert cold == {"random", "coreset", "kmeans", "typiclust", "probcover"}
    for info in strategies.available():
        assert info.reference, info.name
        assert info.cost, info.name
        assert info.summary, info.name


def test_register_rejects_unknown_needs_and_taken_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy_builtins())
    with pytest.raises(StrategyError, match="unknown needs"):
        strategies.register("x", family="f", needs={"labels"}, cost="O(1)", reference="r")
    with pytest.raises(StrategyError, match="already registered"):
        strategies.register("kcenter", family="f", needs=(), cost="O(1)", reference="r")(
            lambda ctx: ctx.unlabeled[: ctx.budget]
        )


def test_a_strategy_breaking_the_contract_is_a_run_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alcli.errors import RunError

    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy_builtins())

    @strategies.register("picks_labeled", family="test", needs=(), cost="O(1)", reference="r")
    def picks_labeled(ctx: strategies.SelectionContext) -> np.ndarray:
        return np.arange(ctx.budget)

    with pytest.raises(RunError, match="already labeled"):
        strategies.run("picks_labeled", budget=2, labeled=np.array([True, False, False]))


# ---------------------------------------------------------------------------------- plugins


def write_dist(site: Path, dist: str, entry_points: str) -> None:
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[alcli.strategies]\n{entry_points}\n")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh registry and a site dir with one good and one broken plugin distribution."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_alcli_plugin.py").write_text(
        textwrap.dedent(
            '''
            import numpy as np
            from alcli.strategies import register

            @register("last_first", family="toys", needs=(), cost="O(n)",
                      reference="a test plugin", cold_start=True)
            def last_first(ctx):
                """Unlabeled items from the highest index down."""
                return ctx.unlabeled[::-1][: ctx.budget]
            '''
        )
    )
    (site / "broken_alcli_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    write_dist(site, "toy-alcli-plugin", "last_first = toy_alcli_plugin:last_first")
    write_dist(site, "broken-alcli-plugin", "broken_one = broken_alcli_plugin")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy_builtins())
    for module in ("toy_alcli_plugin", "broken_alcli_plugin"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    return site


def test_plugins_load_lazily_and_a_broken_one_is_skipped(plugin_site: Path) -> None:
    strategies.run("margin", budget=1, probs=HAND_PROBS, labeled=[0])
    assert "toy_alcli_plugin" not in sys.modules  # built-in names never touch plugins

    with pytest.warns(strategies.PluginWarning, match=r"broken-alcli-plugin.*boom at import"):
        picks = strategies.run("last_first", budget=3, embeddings=LINE)
    assert picks.tolist() == [4, 3, 2]
    info = strategies.get("last_first")
    assert (info.family, info.origin, info.cold_start) == ("toys", "toy-alcli-plugin", True)
    assert "last_first" in [i.name for i in strategies.available("toys")]

    with pytest.raises(StrategyError, match=r"broken-alcli-plugin.*RuntimeError: boom"):
        strategies.run("broken_one", budget=1, embeddings=LINE)
    # built-ins still work after the failure
    assert strategies.run("coreset", budget=1, embeddings=LINE).tolist() == [3]


def test_available_loads_plugins_once(plugin_site: Path) -> None:
    with pytest.warns(strategies.PluginWarning):
        names = [info.name for info in strategies.available()]
    assert "last_first" in names
    assert set(ALL_NAMES) <= set(names)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strategies.available()  # no second import, no second warning


def test_the_type_checker_sees_the_zoo_under_its_shipped_name() -> None:
    """mypy cannot follow pyproject's package-dir mapping (alcli.strategies = strategies/);
    without this link, calls into alcli.strategies type-check silently as Any."""
    root = Path(__file__).resolve().parents[1]
    link = root / "src" / "alcli" / "strategies"
    assert link.is_symlink()
    assert link.resolve() == (root / "strategies").resolve()
