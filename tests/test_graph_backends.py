"""The graph heads' kNN graph: backends (auto, exact, faiss, usearch), determinism, the disk
cache, and ``--graph-backend`` on the command line and in alcli.toml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alcli.cli import app
from alcli.errors import UsageError
from alcli.learner import graph as graph_mod
from alcli.learner import graph_cache, head_space
from alcli.learner.graph import EXACT_MAX_ROWS, build_graph, check_backend, choose_backend

HNSW = [b for b in ("faiss", "usearch") if graph_mod.installed(b)]


def clustered(n: int = 1500, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative rows in 5 clusters (like a CNN's pooled features) and their cluster."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 5
    X = np.abs((rng.normal(size=(5, d)) * 3)[y] + rng.normal(size=(n, d)))
    return X.astype(np.float32), y


def test_backend_names_are_checked_with_a_suggestion() -> None:
    assert check_backend(" FAISS ") == "faiss"
    with pytest.raises(UsageError, match="did you mean 'faiss'"):
        check_backend("fiass")
    with pytest.raises(UsageError, match="auto, exact, faiss, usearch"):
        check_backend("annoy")


def test_auto_is_exact_for_small_pools_and_hnsw_above(monkeypatch) -> None:
    assert choose_backend("auto", EXACT_MAX_ROWS) == "exact"
    if HNSW:
        assert choose_backend("auto", EXACT_MAX_ROWS + 1) == HNSW[0]
    monkeypatch.setattr(graph_mod, "installed", lambda name: name == "exact")
    assert choose_backend("exact", 10**7) == "exact"  # asked for: the user waits
    with pytest.raises(UsageError, match="pip install 'alcli\\[graph\\]'"):
        choose_backend("auto", 1_000_000)
    with pytest.raises(UsageError, match="needs the faiss-cpu package"):
        choose_backend("faiss", 100)


@pytest.mark.parametrize("backend", HNSW)
def test_hnsw_graphs_are_deterministic_and_near_exact(backend) -> None:
    X, y = clustered()
    exact = build_graph(X, k=10, dim=12, backend="exact")
    first = build_graph(X, k=10, dim=12, backend=backend)
    again = build_graph(X, k=10, dim=12, backend=backend)
    assert first.backend == backend
    np.testing.assert_array_equal(first.neighbors, again.neighbors)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert not (first.neighbors == np.arange(len(X))[:, None]).any()  # never its own neighbour
    recall = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(first.neighbors, exact.neighbors, strict=True)]
    )
    assert recall > 0.95
    assert (y[first.neighbors] == y[:, None]).mean() > 0.95


def test_graph_cache_reuses_and_rebuilds(tmp_path) -> None:
    X, _ = clustered(600)
    folder = tmp_path / "graphs"
    built = graph_cache.cached_graph(X, directory=folder, k=8, dim=6)
    assert not built.cached
    assert built.backend == "exact"
    (path,) = folder.glob("graph-*.npz")
    again = graph_cache.cached_graph(X, directory=folder, k=8, dim=6)
    assert again.cached
    np.testing.assert_array_equal(again.neighbors, built.neighbors)
    np.testing.assert_array_equal(again.points, built.points)
    np.testing.assert_array_equal(again.scaler.mean, built.scaler.mean)
    # other content, other k: other files, never the stored graph
    other = X.copy()
    other[0, 0] += 1.0
    assert not graph_cache.cached_graph(other, directory=folder, k=8, dim=6).cached
    assert not graph_cache.cached_graph(X, directory=folder, k=5, dim=6).cached
    assert len(list(folder.glob("graph-*.npz"))) == 3
    # a damaged file is rebuilt (and replaced), not fatal
    path.write_bytes(b"not a zip")
    rebuilt = graph_cache.cached_graph(X, directory=folder, k=8, dim=6)
    assert not rebuilt.cached
    np.testing.assert_array_equal(rebuilt.neighbors, built.neighbors)
    assert graph_cache.cached_graph(X, directory=folder, k=8, dim=6).cached
    assert not list(folder.glob(".graph-*"))  # no temporary file left behind


def test_graph_cache_that_cannot_be_written_still_gives_the_graph(tmp_path) -> None:
    X, _ = clustered(300)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    graph = graph_cache.cached_graph(X, directory=blocker / "graphs", k=5, dim=4)
    assert graph.neighbors.shape == (300, 5)
    assert not graph.cached


def test_graph_cache_keeps_the_most_recently_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(graph_cache, "MAX_FILES", 2)
    X, _ = clustered(200)
    for k in (3, 4, 5):
        graph_cache.cached_graph(X, directory=tmp_path, k=k, dim=4)
    assert len(list(tmp_path.glob("graph-*.npz"))) == 2
    assert graph_cache.cached_graph(X, directory=tmp_path, k=5, dim=4).cached  # the newest kept


def test_head_space_reads_the_cached_graph(tmp_path) -> None:
    X, _ = clustered(400)
    first = head_space("graph", X, cache=tmp_path)
    second = head_space("graph", X, cache=tmp_path)
    assert first.graph is not None
    assert second.graph is not None
    assert second.graph.cached
    assert not first.graph.cached
    np.testing.assert_array_equal(first.pool, second.pool)


def arrays(tmp_path: Path) -> tuple[Path, Path]:
    X, y = clustered(400)
    emb = tmp_path / "emb.npy"
    np.save(emb, X)
    labels = tmp_path / "labels.csv"
    labels.write_text("uri,label\n" + "".join(f"{i},{y[i]}\n" for i in range(20)))
    return emb, labels


def test_select_graph_backend_option_and_cache(runner, tmp_path) -> None:
    emb, labels = arrays(tmp_path)
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "margin", "-b", "5"]
    args += ["--head", "graph", "--json"]
    first = runner.invoke(app, [*args, "--graph-backend", "exact"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["graph"]["backend"] == "exact"
    assert not summary["graph"]["cached"]
    assert list((tmp_path / "cache" / "graphs").glob("graph-*.npz"))
    again = json.loads(runner.invoke(app, args).stdout)  # auto: exact at 400 rows, cached
    assert again["graph"]["cached"]
    assert again["graph"]["backend"] == "exact"
    assert [p["uri"] for p in again["picks"]] == [p["uri"] for p in summary["picks"]]


def test_bad_graph_backend_is_one_line_and_exit_2(runner, tmp_path) -> None:
    emb, labels = arrays(tmp_path)
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "margin", "-b", "3"]
    result = runner.invoke(app, [*args, "--head", "graph", "--graph-backend", "exakt"])
    assert result.exit_code == 2
    assert "did you mean 'exact'" in result.output
    assert "Traceback" not in result.output
    auto = runner.invoke(
        app, ["auto", "--target-acc", "0.9", "--budget", "500", "--graph-backend", "hnsw"]
    )
    assert auto.exit_code == 2
    assert "unknown graph backend" in auto.output


def test_graph_backend_from_alcli_toml(runner, tmp_path) -> None:
    emb, labels = arrays(tmp_path)
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "margin", "-b", "3"]
    args += ["--head", "graph"]
    (tmp_path / "alcli.toml").write_text('graph_backend = "usaerch"\n')
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "did you mean 'usearch'" in result.output
    (tmp_path / "alcli.toml").write_text('[select]\ngraph-backend = "exact"\n')
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["graph"]["backend"] == "exact"


def test_auto_builds_its_graph_with_the_chosen_backend_and_keeps_it(tmp_path) -> None:
    from alcli.agent import AutoConfig, EvalSet, run_auto

    X, y = clustered(500, d=16)
    uris = [f"item{i}" for i in range(400)]
    truth = {u: str(y[i]) for i, u in enumerate(uris)}

    class Oracle:
        def label(self, asked: list[str]) -> dict[str, str]:
            return {u: truth[u] for u in asked}

    eval_set = EvalSet([f"e{i}" for i in range(100)], X[400:], [str(v) for v in y[400:]])
    backend = HNSW[0] if HNSW else "exact"
    config = AutoConfig(
        target_accuracy=1.0,
        budget=40,
        strategies=("margin",),
        initial=20,
        round_size=20,
        head="graph",
        graph_backend=backend,
    )
    graphs = tmp_path / "graphs"
    report = run_auto(
        uris,
        X[:400],
        Oracle(),
        config,
        out_dir=tmp_path / "run",
        eval_set=eval_set,
        graph_cache=graphs,
    )
    assert report.config["graph_backend"] == backend
    (path,) = graphs.glob("graph-*.npz")
    with np.load(path) as data:
        assert str(data["backend"]) == backend
    # a run saved before the option existed built its graph exactly, and resumes so
    legacy = {k: v for k, v in config.as_dict().items() if k != "graph_backend"}
    assert AutoConfig.from_dict(legacy).graph_backend == "exact"
    with pytest.raises(UsageError, match="did you mean 'faiss'"):
        AutoConfig(
            target_accuracy=0.9, budget=200, strategies=("margin",), graph_backend="fais"
        ).checked()


def test_head_components_on_the_command_line_and_in_alcli_toml(runner, tmp_path) -> None:
    emb, labels = arrays(tmp_path)
    d = int(np.load(emb).shape[1])
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "margin", "-b", "3"]
    args += ["--head", "graph_selftrain", "--json"]
    every = runner.invoke(app, [*args, "--head-components", "0"])
    assert every.exit_code == 0, every.output
    assert json.loads(every.stdout)["graph"]["space_dims"] == 2 * d
    (tmp_path / "alcli.toml").write_text("head_components = 4\n")
    four = runner.invoke(app, args)
    assert four.exit_code == 0, four.output
    assert json.loads(four.stdout)["graph"]["space_dims"] == 4
    bad = runner.invoke(app, [*args, "--head-components", "-3"])
    assert bad.exit_code == 2
    assert "--head-components must be 0 (every column) or more" in bad.output
    assert "Traceback" not in bad.output


def test_auto_config_head_components_default_legacy_and_bad() -> None:
    from alcli.agent import AutoConfig
    from alcli.learner.semisup import GRAPH_SPACE_COMPONENTS

    config = AutoConfig(target_accuracy=0.9, budget=200, strategies=("margin",)).checked()
    assert config.head_components == GRAPH_SPACE_COMPONENTS
    # a run saved before the option existed kept every column, and resumes so
    legacy = {k: v for k, v in config.as_dict().items() if k != "head_components"}
    assert AutoConfig.from_dict(legacy).head_components == 0
    with pytest.raises(UsageError, match="--head-components must be 0"):
        AutoConfig(
            target_accuracy=0.9, budget=200, strategies=("margin",), head_components=-1
        ).checked()
