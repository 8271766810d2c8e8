"""Constraints on any strategy (--balance, --min-distance) and weighted combinations.

Small synthetic pools keep it fast; each property is checked against a brute-force
reference written here (a plain Python greedy walk of the strategy's order, a Borda count).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from alcli import strategies
from alcli.agent import AutoConfig, load_state, run_auto
from alcli.cli import app
from alcli.constraints import Balance, Constraints, class_groups, constrained_pick, parse, quotas
from alcli.errors import StrategyError, UsageError
from alcli.selection import pick
from test_agent import RecordingOracle, blob_pool


def blobs(n: int = 900, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, probs): three classes, class 0 the uncertain one (margin crowds into it)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = (rng.normal(size=(3, d))[y] * 2 + rng.normal(size=(n, d))).astype(np.float32)
    X[50:80] = X[50] + 1e-4 * rng.normal(size=(30, d)).astype(np.float32)  # near-duplicates
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), y] = 0.9
    probs[y == 0] = [0.5, 0.45, 0.05]  # class 0 sits on the boundary
    probs[50:80] = [0.34, 0.33, 0.33]  # the duplicates are the most uncertain of all
    return X, y, probs / probs.sum(1, keepdims=True)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_min_distance(order, X, labeled_rows, budget, r):
    """The definition, one candidate at a time: skip any closer than r to a kept one."""
    U = unit(X.astype(np.float64))
    kept: list[int] = []
    skipped = 0
    for row in order:
        if len(kept) == budget:
            break
        others = [*labeled_rows, *kept]
        if others and (1 - U[others] @ U[row]).min() < r:
            skipped += 1
            continue
        kept.append(int(row))
    return kept, skipped


def test_min_distance_is_exact_greedy_in_the_strategys_order():
    X, _, probs = blobs()
    labeled = np.zeros(len(X), dtype=bool)
    labeled[[0, 1, 2]] = True
    for r in (0.01, 0.2):
        picks, report = constrained_pick(
            "margin",
            budget=25,
            constraints=Constraints(min_distance=r),
            embeddings=X,
            labeled=labeled,
            probs=probs,
        )
        order = strategies.run("margin", budget=int((~labeled).sum()), probs=probs, labeled=labeled)
        want, skipped = reference_min_distance(order, X, [0, 1, 2], 25, r)
        assert picks.indices.tolist() == want
        assert report.skipped_min_distance == skipped
        U = unit(X[picks.indices].astype(np.float64))
        gaps = 1 - U @ U.T
        assert gaps[~np.eye(25, dtype=bool)].min() >= r - 1e-6
    # without the constraint margin takes the near-duplicates; with it, one of them
    plain = strategies.run("margin", budget=25, probs=probs, labeled=labeled)
    assert np.isin(plain, np.arange(50, 80)).sum() == 25
    assert np.isin(picks.indices, np.arange(50, 80)).sum() == 1


def test_balance_quotas_fill_each_class_in_the_strategys_order():
    X, _, probs = blobs()
    labeled = np.zeros(len(X), dtype=bool)
    groups = class_groups(probs, ["a", "b", "c"])
    picks, report = constrained_pick(
        "margin",
        budget=31,
        constraints=Constraints(balance=Balance("uniform")),
        embeddings=X,
        labeled=labeled,
        groups=groups,
        probs=probs,
    )
    counts = np.bincount(groups.of_row[picks.indices], minlength=3)
    assert counts.tolist() == [11, 10, 10]  # largest remainder: the extra one to the first
    assert report.groups == {
        "a": {"target": 11, "picked": 11},
        "b": {"target": 10, "picked": 10},
        "c": {"target": 10, "picked": 10},
    }
    order = strategies.run("margin", budget=len(X), probs=probs).tolist()
    for g in range(3):  # within a class: the strategy's first ones, in its order
        mine = [r for r in picks.indices.tolist() if groups.of_row[r] == g]
        assert mine == [r for r in order if groups.of_row[r] == g][: counts[g]]
    # a target distribution; a class with no candidates left gives its places to the others
    skewed = Balance("file", {"a": 0.5, "b": 0.5})
    assert quotas(10, skewed, ["a", "b", "c"]).tolist() == [5, 5, 0]
    few = labeled.copy()
    few[np.flatnonzero(groups.of_row == 1)[3:]] = True  # only 3 class-b items unlabeled
    picks, report = constrained_pick(
        "margin",
        budget=10,
        constraints=Constraints(balance=skewed),
        embeddings=X,
        labeled=few,
        groups=groups,
        probs=probs,
    )
    assert len(picks.indices) == 10
    assert report.groups["b"] == {"target": 5, "picked": 3}
    assert report.groups["a"]["picked"] == 7


def test_parse_rejects_bad_values(tmp_path: Path):
    for bad in (0, -0.1, 2.5, float("nan")):
        with pytest.raises(UsageError, match="min-distance"):
            parse(None, bad)
    with pytest.raises(UsageError, match="no such file"):
        parse(str(tmp_path / "nope.csv"), None)
    path = tmp_path / "target.csv"
    path.write_text("class,weight\ncat,3\ndog,1\n")
    assert parse(str(path), None).balance.weights == {"cat": 0.75, "dog": 0.25}
    path.write_text("cat,3\ndog,-1\n")
    with pytest.raises(UsageError, match=":2:"):
        parse(str(path), None)
    with pytest.raises(UsageError, match="classes the labels do not have"):
        quotas(4, Balance("f", {"cow": 1.0}), ["cat", "dog"])


def test_combination_is_a_weighted_borda_count():
    X, _, probs = blobs()
    labeled = np.zeros(len(X), dtype=bool)
    labeled[:5] = True
    spec = "margin:0.7+typiclust:0.3"
    info = strategies.get(spec)
    assert info.name == spec
    assert info.needs == {"probs", "embeddings", "labeled"}
    assert strategies.get("Margin:7 + typiclust:3").name == spec  # weights normalised
    got = strategies.run_with_scores(spec, budget=12, probs=probs, embeddings=X, labeled=labeled)
    again = strategies.run_with_scores(spec, budget=12, probs=probs, embeddings=X, labeled=labeled)
    assert got.indices.tolist() == again.indices.tolist()
    # the reference: each component's order at depth 4·b, seeds drawn from the same generator
    depth = 48
    seeds = np.random.default_rng(0).integers(0, 2**62, size=2)
    unlabeled = np.flatnonzero(~labeled)
    cost = np.zeros(len(X))
    for (name, w), seed in zip((("margin", 0.7), ("typiclust", 0.3)), seeds, strict=True):
        ranks = np.full(len(X), float(depth))
        order = strategies.run(
            name, budget=depth, probs=probs, embeddings=X, labeled=labeled, seed=int(seed)
        )
        ranks[order] = np.arange(depth)
        cost += w * ranks
    want = sorted(unlabeled.tolist(), key=lambda r: (cost[r], r))[:12]
    assert got.indices.tolist() == want
    assert np.allclose(got.scores, 1 - cost[want] / depth)
    for bad in ("margin:0+typiclust", "margin:x+typiclust", "margin+margin", "margin+", "margn+x"):
        with pytest.raises(StrategyError):
            strategies.get(bad)


def test_select_with_constraints_library_and_cold_start():
    X, y, _ = blobs()
    uris = [f"u{i}" for i in range(len(X))]
    labels = {uris[i]: f"c{y[i]}" for i in range(0, len(X), 30)}
    sel = pick(
        strategy="margin:0.5+coreset:0.5",
        budget=12,
        uris=uris,
        embeddings=X,
        labels=labels,
        constraints=parse("uniform", 0.05),
    )
    assert sel.constraints is not None
    assert sel.constraints["balance_by"] == "class"
    assert {g["picked"] for g in sel.constraints["groups"].values()} == {4}
    assert "constraints" in sel.summary()
    cold = pick(
        strategy="typiclust", budget=20, uris=uris, embeddings=X, constraints=parse("uniform", None)
    )
    assert cold.constraints["balance_by"] == "cluster"
    assert all(g["picked"] == 2 for g in cold.constraints["groups"].values())


@pytest.fixture
def arrays(tmp_path: Path) -> dict[str, Any]:
    X, y, probs = blobs()
    np.save(tmp_path / "emb.npy", X)
    np.save(tmp_path / "probs.npy", probs)
    return {"emb": tmp_path / "emb.npy", "probs": tmp_path / "probs.npy", "y": y}


def test_select_cli_json_and_one_line_errors(runner: CliRunner, arrays, tmp_path: Path):
    base = ["select", "--probs", arrays["probs"], "--embeddings", arrays["emb"], "-b", "9"]
    base = [str(a) for a in base]
    out = runner.invoke(
        app, [*base, "-s", "margin", "--balance", "uniform", "--min-distance", "0.01", "--json"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["constraints"]["groups"] == {str(c): {"target": 3, "picked": 3} for c in range(3)}
    assert doc["constraints"]["skipped_min_distance"] >= 0
    human = runner.invoke(app, [*base, "-s", "margin", "--min-distance", "0.01"])
    assert human.exit_code == 0
    assert "skipped" in human.stderr
    (tmp_path / "alcli.toml").write_text('[select]\nstrategy = "margin:0.7+typiclust:0.3"\n')
    combo = runner.invoke(app, [*base, "--config", str(tmp_path / "alcli.toml"), "--json"])
    assert combo.exit_code == 0, combo.output
    assert json.loads(combo.stdout)["strategy"] == "margin:0.7+typiclust:0.3"
    for extra in (
        ["-s", "margin", "--min-distance", "0"],
        ["-s", "margin", "--min-distance", "3"],
        ["-s", "margin", "--balance", str(tmp_path / "missing.csv")],
        ["-s", "margin:-1+typiclust"],
    ):
        bad = runner.invoke(app, [*base, *extra])
        assert bad.exit_code == 2, (extra, bad.output)
        assert len(bad.stderr.strip().splitlines()) <= 2, bad.stderr
        assert "Traceback" not in bad.stderr
    only_probs = runner.invoke(
        app,
        [
            "select",
            "--probs",
            str(arrays["probs"]),
            "-s",
            "margin",
            "-b",
            "3",
            "--min-distance",
            "0.1",
        ],
    )
    assert only_probs.exit_code == 2


def test_auto_applies_constraints_to_every_candidate(tmp_path: Path):
    uris, X, truth, eval_set = blob_pool(n=400)
    X[:40] = X[0]  # forty copies of one item
    config = AutoConfig(
        target_accuracy=0.99,
        budget=130,
        strategies=("margin", "margin:0.6+coreset:0.4"),
        initial=40,
        round_size=30,
        seed=3,
        plateau_rounds=50,
        balance="uniform",
        min_distance=0.02,
    ).checked()
    run_auto(uris, X, RecordingOracle(truth), config, out_dir=tmp_path, eval_set=eval_set)
    state = load_state(tmp_path)
    assert state.config.min_distance == 0.02
    U = unit(X.astype(np.float64))
    initial = set(state.sets["margin"][:40])
    for name, rows in state.sets.items():
        picked = [r for r in rows if r not in initial]
        assert picked, name
        for i, row in enumerate(picked):  # every pick far from the ones its set had before
            earlier = [r for r in rows if r != row and (r in initial or r in picked[:i])]
            assert (1 - U[earlier] @ U[row]).min() >= 0.02 - 1e-6, (name, row)


# --- your own features ------------------------------------------------------------------------


def own_features(tmp_path: Path, n: int = 60) -> tuple[Path, list[Path], np.ndarray]:
    from helpers import write_pngs

    paths = write_pngs(tmp_path / "pool", n)
    X = np.random.default_rng(1).normal(size=(n, 6)).astype(np.float32)
    np.save(tmp_path / "emb.npy", X)
    (tmp_path / "uris.txt").write_text("".join(f"{p}\n" for p in paths))
    return tmp_path / "pool", paths, X


def test_embed_from_npy_then_select_with_features_model(runner: CliRunner, tmp_path: Path):
    pool, paths, X = own_features(tmp_path)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    imported = runner.invoke(
        app,
        ["embed", "--from-npy", str(tmp_path / "emb.npy"), "--uris", str(tmp_path / "uris.txt"),
         "--fingerprint", "my-clip", *cache, "--json"],
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    doc = json.loads(imported.stdout)
    assert (doc["stored"], doc["dim"], doc["skipped"]) == (60, 6, 0)
    from alcli.embedding import EmbedOptions, embed

    got = embed(str(pool), options=EmbedOptions(model="features:my-clip"), cache=tmp_path / "cache")
    assert got.embedded == 0
    assert [item.uri for item in got.items] == [str(p) for p in paths]
    assert np.array_equal(got.embeddings, X)  # row i is the i-th URI's, bit for bit
    picked = runner.invoke(
        app,
        ["select", str(pool), "--model", "features:my-clip", "-s", "coreset", "-b", "5",
         "--min-distance", "0.01", *cache, "--json"],
    )  # fmt: skip
    assert picked.exit_code == 0, picked.output
    rows = json.loads(picked.stdout)
    assert rows["picked"] == 5
    # a new image has no imported features: skipped with that reason, the rest still work
    from helpers import write_pngs

    write_pngs(pool, 1, seed=9, prefix="new")
    more = runner.invoke(
        app, ["select", str(pool), "--model", "features:my-clip", "-s", "random", "-b", "3", *cache]
    )
    assert more.exit_code == 0, more.output
    assert "no imported features 'my-clip'" in more.stderr
    unknown = runner.invoke(
        app, ["select", str(pool), "--model", "features:other", "-s", "random", "-b", "3", *cache]
    )
    assert unknown.exit_code == 2
    assert "no imported features 'other'" in unknown.stderr


def test_embed_from_npy_bad_input_is_one_line(runner: CliRunner, tmp_path: Path):
    _, paths, X = own_features(tmp_path)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    np.save(tmp_path / "short.npy", X[:-1])
    nan = X.copy()
    nan[3, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    uris = ["--uris", str(tmp_path / "uris.txt")]
    for args in (
        ["--from-npy", str(tmp_path / "short.npy"), *uris, "--fingerprint", "x"],
        ["--from-npy", str(tmp_path / "nan.npy"), *uris, "--fingerprint", "x"],
        ["--from-npy", str(tmp_path / "emb.npy"), *uris],
        ["--from-npy", str(tmp_path / "emb.npy"), *uris, "--fingerprint", "../etc"],
        ["--from-npy", str(tmp_path / "emb.npy"), "--fingerprint", "x"],
        ["--from-npy", str(tmp_path / "missing.npy"), *uris, "--fingerprint", "x"],
    ):
        bad = runner.invoke(app, ["embed", *args, *cache])
        assert bad.exit_code == 2, (args, bad.output)
        assert "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) <= 2, bad.stderr
    # a URI that does not exist is skipped with its reason; the others are stored
    (tmp_path / "uris.txt").write_text(
        "".join(f"{p}\n" for p in paths[:-1]) + f"{tmp_path / 'gone.png'}\n"
    )
    partly = runner.invoke(
        app,
        ["embed", "--from-npy", str(tmp_path / "emb.npy"), *uris, "--fingerprint", "x",
         *cache, "--json"],
    )  # fmt: skip
    assert partly.exit_code == 0, partly.output
    assert (json.loads(partly.stdout)["stored"], json.loads(partly.stdout)["skipped"]) == (59, 1)


def test_embed_from_parquet(runner: CliRunner, tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pool, paths, X = own_features(tmp_path)
    table = pa.table({"uri": [str(p) for p in paths], "vec": [list(map(float, r)) for r in X]})
    pq.write_table(table, tmp_path / "emb.parquet")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    done = runner.invoke(
        app,
        ["embed", "--from-parquet", str(tmp_path / "emb.parquet"), "--column", "vec",
         "--fingerprint", "pq", *cache, "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    from alcli.embedding import EmbedOptions, embed

    got = embed(str(pool), options=EmbedOptions(model="features:pq"), cache=tmp_path / "cache")
    assert np.allclose(got.embeddings, X)


def test_auto_cli_checks_constraints_before_embedding(runner: CliRunner, tmp_path: Path):
    from helpers import write_pngs

    write_pngs(tmp_path / "pool", 3)
    (tmp_path / "labels.csv").write_text("uri,label\n")
    base = ["auto", str(tmp_path / "pool"), "--oracle", str(tmp_path / "labels.csv")]
    base += ["--target-acc", "0.9", "--budget", "200", "--cache-dir", str(tmp_path / "c")]
    for extra in (
        ["--min-distance", "5"],
        ["--balance", str(tmp_path / "nope.csv")],
        ["--strategies", "margin:2+coreset:x"],
    ):
        bad = runner.invoke(app, [*base, *extra])
        assert bad.exit_code == 2, (extra, bad.output)
        assert "Traceback" not in bad.stderr
        assert not (tmp_path / "c").exists()  # nothing embedded
