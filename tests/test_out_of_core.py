"""Select and auto out of core (issue 16): the pool streamed from the cache within --memory.

Pools of thousands with a memory setting of a few hundred KiB, so the chunked paths (blocks,
committee scored per block, candidates) run here: streamed picks equal in-memory picks for
every strategy exact at scale, and the streamed path never holds an n x d array.
"""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alcli import selection, strategies
from alcli.agent import AutoConfig, run_auto
from alcli.cache import EmbeddingCache
from alcli.cli import app
from alcli.errors import UsageError
from alcli.learner import fit_scaler
from alcli.oracle import LabelsFileOracle
from alcli.rows import ArrayRows, CachedRows, parse_memory

FP = "0123456789abcdef0123456789abcdef"


def blobs(n: int, d: int, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, (classes, d))
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def pool_labels(n: int, y: np.ndarray, count: int, seed: int = 1) -> tuple[list[str], dict]:
    uris = [f"s3://b/{i:05d}.jpg" for i in range(n)]
    rows = np.random.default_rng(seed).choice(n, count, replace=False)
    return uris, {uris[i]: f"c{y[i]}" for i in rows}


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GiB", 4 << 30), ("512M", 512 << 20), ("2.5g", int(2.5 * 2**30)), ("64 MiB", 64 << 20)],
)
def test_parse_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "4 parsecs", "1MiB"])
def test_parse_memory_refuses_nonsense_and_too_little(text):
    with pytest.raises(UsageError):
        parse_memory(text)


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_cached_rows_read_what_lookup_gathers(tmp_path, storage):
    X, _ = blobs(3000, 24)
    keys = [f"{i:032x}" for i in range(3000)]
    with EmbeddingCache(tmp_path, storage_dtype=storage, durable=False) as cache:
        for start in (0, 1000, 2200):  # three segments
            stop = {0: 1000, 1000: 2200, 2200: 3000}[start]
            cache.store(FP, keys[start:stop], X[start:stop])
        wanted = [*keys[::-1][:500], "f" * 32, *keys]  # out of order, a missing key, in order
        gathered, found = cache.lookup(FP, wanted)
        rows = cache.rows(FP, wanted)
        assert np.array_equal(rows.found, found)
        usable = np.flatnonzero(found)
        streamed = CachedRows(cache, FP, rows.view, rows.gids[usable], memory=40_000)
        assert streamed.block_rows == 1024
        assert streamed.block_rows < 1500  # blocks across segments
        assert np.array_equal(streamed.take([7, 3, 3400]), gathered[usable][[7, 3, 3400]])
        blocks = [block.copy() for _, block in streamed.blocks()]
        assert np.array_equal(np.concatenate(blocks), gathered[usable])
        if storage == "float16":
            assert np.array_equal(gathered[usable][500:], X.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_cached_rows_read_a_run_in_parts_on_threads(tmp_path, monkeypatch, storage):
    import alcli.rows

    monkeypatch.setattr(alcli.rows, "PART_ROWS", 100)  # a 1,024-row block: 11 parts
    monkeypatch.setattr(alcli.rows, "READ_THREADS", 2)
    X, _ = blobs(2500, 8)
    keys = [f"{i:032x}" for i in range(2500)]
    with EmbeddingCache(tmp_path, storage_dtype=storage, durable=False) as cache:
        cache.store(FP, keys[:2000], X[:2000])
        cache.store(FP, keys[2000:], X[2000:])  # a second segment: read ahead across it
        rows = cache.rows(FP, keys).with_memory(40_000)
        expect = X.astype(np.float16).astype(np.float32) if storage == "float16" else X
        got = np.concatenate([block.copy() for _, block in rows.blocks()])
        assert np.array_equal(got, expect)
        assert np.array_equal(rows[1500:2400], expect[1500:2400])
        weights = np.random.default_rng(4).standard_normal((8, 3)).astype(np.float32)
        assert np.allclose(rows.project(weights), expect @ weights, rtol=1e-5, atol=1e-5)


def test_keys_in_storage_order_need_no_index_but_a_key_stored_twice_still_does(tmp_path):
    X, _ = blobs(300, 4)
    keys = [f"{i:032x}" for i in range(300)]
    with EmbeddingCache(tmp_path, durable=False) as cache:
        cache.store(FP, keys[:200], X[:200])
        cache.store(FP, keys[200:], X[200:])
    with EmbeddingCache(tmp_path, durable=False) as cache:  # a warm run's own process
        rows = cache.rows(FP, keys)  # the stored keys, in order: row i is key i, no index
        assert np.array_equal(rows.gids, np.arange(300))
        assert rows.view._indexes is None
        assert np.array_equal(rows.take(np.arange(300)), cache.lookup(FP, keys)[0])
        cache.store(FP, [keys[3]], X[7:8])  # stored again: the later row wins
        stored = [*keys, keys[3]]  # the query is the storage order, key 3 twice
        rows = cache.rows(FP, stored)
        assert rows.gids[3] == rows.gids[300] == 300
        assert np.array_equal(rows.take([3])[0], X[7])


def test_cached_rows_follow_a_compaction_that_replaced_their_segments(tmp_path):
    """auto embeds its eval set after the pool's rows were located, and that compacts."""
    X, _ = blobs(3000, 8)
    keys = [f"{i:032x}" for i in range(3000)]
    with EmbeddingCache(tmp_path, durable=False) as cache:
        for start in range(0, 3000, 500):
            cache.store(FP, keys[start : start + 500], X[start : start + 500])
        rows = cache.rows(FP, keys).subset(np.arange(1, 3000))
        rows.memory = 1 << 20
        first = rows.take([0, 1]).copy()
        cache.compact(FP)
        assert len(cache.rows(FP, keys).view.embedding_segments) == 1
        assert np.array_equal(rows.take([0, 1]), first)
        assert np.array_equal(np.concatenate([b.copy() for _, b in rows.blocks()]), X[1:])


def exact_names() -> list[str]:
    return [s.name for s in strategies.available() if s.scaling.exact]


@pytest.mark.parametrize("name", exact_names())
def test_streamed_picks_equal_in_memory_picks(name):
    """Every strategy exact at scale: same rows and scores with a tiny memory setting (blocks
    of 256 rows, the committee scored per block, embeddings not gathered)."""
    n = 3000
    X, y = blobs(n, 32)
    uris, labels = pool_labels(n, y, 60)
    exclude = uris[100:110]
    ref = selection.pick(
        strategy=name, budget=25, uris=uris, embeddings=X, labels=labels, exclude=exclude, seed=3
    )
    rows = ArrayRows(X.astype(np.float16).astype(np.float32), memory=150_000)
    X16 = X.astype(np.float16).astype(np.float32)
    ref16 = selection.pick(
        strategy=name, budget=25, uris=uris, embeddings=X16, labels=labels, exclude=exclude, seed=3
    )
    got = selection.pick(
        strategy=name, budget=25, uris=uris, embeddings=rows, labels=labels, exclude=exclude, seed=3
    )
    assert got.exact
    assert np.array_equal(got.rows, ref16.rows)
    np.testing.assert_array_equal(got.scores, ref16.scores)
    assert len(ref.rows) == 25
    if name in {"bald", "vote_entropy"}:
        assert got.method == "streamed per block"
    if name in {"dbal", "cluster_margin"}:
        assert "lowest-margin" in got.method


@pytest.mark.parametrize("name", [s.name for s in strategies.available() if not s.scaling.exact])
def test_approximated_strategies_say_so_and_pick_valid_rows(name):
    n = 3000
    X, y = blobs(n, 32)
    uris, labels = pool_labels(n, y, 60)
    got = selection.pick(
        strategy=name,
        budget=20,
        uris=uris,
        embeddings=ArrayRows(X, memory=150_000),
        labels=labels,
        seed=0,
    )
    assert not got.exact
    assert "subsample" in got.method or "lowest-margin" in got.method
    assert len(set(got.rows.tolist())) == 20
    labeled_rows = {int(u.rsplit("/", 1)[1][:5]) for u in labels}
    assert not labeled_rows & set(got.rows.tolist())
    again = selection.pick(
        strategy=name,
        budget=20,
        uris=uris,
        embeddings=ArrayRows(X, memory=150_000),
        labels=labels,
        seed=0,
    )
    assert np.array_equal(again.rows, got.rows)  # deterministic


def test_streamed_margin_never_holds_the_pool():
    """tracemalloc sees numpy's allocations: the streamed path stays far below n x d."""
    n, d = 20_000, 64
    X, y = blobs(n, d)
    uris, labels = pool_labels(n, y, 100)
    rows = ArrayRows(X.astype(np.float16), memory=300_000)  # float16: read() converts per block
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        picks = selection.pick(
            strategy="margin", budget=50, uris=uris, embeddings=rows, labels=labels
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(picks.rows) == 50
    assert peak < n * d * 4 / 2, f"peak {peak} bytes: the pool ({n * d * 4} bytes) was gathered"
    assert set(picks.timings) >= {"scaler_s", "head_s", "predict_s", "strategy_s"}


def test_fit_scaler_on_streamed_rows_is_bit_identical():
    X, _ = blobs(5000, 40)
    rows = ArrayRows(X.astype(np.float64), memory=100_000)
    assert rows.block_rows < len(X)
    a, b = fit_scaler(X), fit_scaler(rows)
    assert np.array_equal(a.mean, b.mean)
    assert np.array_equal(a.scale, b.scale)


def write_pool(tmp_path: Path, n: int, d: int, storage: str) -> tuple[Path, Path, np.ndarray]:
    """An inventory manifest (no image exists), its rows cached under resnet18's fingerprint
    as ``alcli embed`` would leave them, and a labels file."""
    from alcli.models import model_fingerprint
    from alcli.sources import resolve_pool

    X, y = blobs(n, d)
    manifest = tmp_path / "pool.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "size", "last_modified", "etag"])
        for i in range(n):
            writer.writerow([f"s3://b/p/{i:05d}.jpg", 100 + i, "2026-11-01T00:00:00Z", f"{i:032x}"])
    keys = [item.key for item in resolve_pool(str(manifest)).items]
    with EmbeddingCache(tmp_path / "cache", storage_dtype=storage, durable=False) as cache:
        cache.store(model_fingerprint("resnet18", "none", None), keys, X)
    labels = tmp_path / "labels.csv"
    picked = np.random.default_rng(2).choice(n, 80, replace=False)
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "label"])
        writer.writerows((f"s3://b/p/{i:05d}.jpg", f"c{y[i]}") for i in picked)
    return manifest, labels, X


def test_cli_select_with_memory_streams_float16_cache_and_reports_phases(tmp_path, runner):
    manifest, labels, X = write_pool(tmp_path, 4000, 16, "float16")
    args = ["select", str(manifest), "--model", "resnet18", "--weights", "none"]
    args += ["-s", "margin", "-b", "30", "-l", str(labels), "--json"]
    done = runner.invoke(app, [*args, "--memory", "16MiB"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["exact"] is True
    assert summary["method"] == "streamed"
    assert {"scaler_s", "predict_s", "strategy_s"} <= set(summary["seconds"])
    ref = selection.pick(
        strategy="margin",
        budget=30,
        uris=[f"s3://b/p/{i:05d}.jpg" for i in range(4000)],
        embeddings=X.astype(np.float16).astype(np.float32),
        labels={r["uri"]: r["label"] for r in csv.DictReader(labels.open())},
    )
    assert [p["uri"] for p in summary["picks"]] == ref.uris
    memos = list((tmp_path / "cache" / "pools").glob("scaler-*.npz"))
    assert len(memos) == 1  # the warm rerun reads the pool once: the scaler is remembered
    again = json.loads(runner.invoke(app, [*args, "--memory", "16MiB"]).stdout)
    assert again["picks"] == summary["picks"]
    assert "scaler_s" in again["seconds"]
    bad = runner.invoke(app, [*args, "--memory", "lots"])
    assert bad.exit_code == 2
    assert "--memory" in bad.output
    (tmp_path / "alcli.toml").write_text('[select]\nmemory = "lots"\n')  # settable there too
    from_file = runner.invoke(app, args)
    assert from_file.exit_code == 2
    assert "--memory must be a size" in from_file.output


def test_a_remembered_manifest_resolves_to_columns_and_picks_the_same(
    tmp_path, runner, monkeypatch
):
    from alcli.cache import manifest_memo_dir
    from alcli.sources import etag_manifests, resolve_pool
    from alcli.sources.table import ItemTable

    monkeypatch.setattr(etag_manifests, "MEMO_MIN_BYTES", 100)  # remember this small one
    manifest, labels, _ = write_pool(tmp_path, 3000, 16, "float32")
    header, *lines = manifest.read_text().splitlines()
    np.random.default_rng(3).shuffle(lines)  # out of URI order: the table keeps a sort order
    manifest.write_text("\n".join([header, *lines]) + "\n")
    exclude = tmp_path / "exclude.txt"
    exclude.write_text(lines[5].split(",")[0] + "\n")
    args = ["select", str(manifest), "--model", "resnet18", "--weights", "none", "--json"]
    args += ["-s", "margin", "-b", "40", "-l", str(labels), "--exclude", str(exclude)]
    args += ["--memory", "16MiB"]
    cold = runner.invoke(app, args)  # parses the manifest (a list of items), remembers it
    assert cold.exit_code == 0, cold.output
    memo = manifest_memo_dir(tmp_path / "cache")
    assert len(list(Path(memo).glob("*.table"))) == 1
    pool = resolve_pool(str(manifest), memo_dir=memo)
    assert isinstance(pool.items, ItemTable)
    assert pool.items == resolve_pool(str(manifest)).items
    warm = runner.invoke(app, args)  # columns: keys as raw bytes, labels found by search
    assert warm.exit_code == 0, warm.output
    assert json.loads(warm.stdout)["picks"] == json.loads(cold.stdout)["picks"]
    assert json.loads(warm.stdout)["excluded"] == 1


def test_strategies_command_shows_scaling(runner: CliRunner):
    done = runner.invoke(app, ["strategies", "--json"])
    rows = {r["name"]: r["scaling"] for r in json.loads(done.stdout)}
    assert rows["margin"]["exact_at_scale"] is True
    assert rows["coreset"]["at_scale"] == "subsample"
    assert rows["dbal"]["at_scale"] == "margin prefilter (exact)"


def test_auto_streams_a_pool_too_big_for_memory_and_refuses_gathering_strategies(tmp_path):
    n = 3000
    X, y = blobs(n, 32)
    uris = [f"s3://b/{i:05d}.jpg" for i in range(n)]
    oracle_file = tmp_path / "oracle.csv"
    with oracle_file.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "label"])
        writer.writerows((u, f"c{c}") for u, c in zip(uris, y, strict=True))
    rows = ArrayRows(X, memory=150_000)
    assert not rows.fits()
    config = AutoConfig(
        target_accuracy=0.999,
        budget=120,
        strategies=("margin", "bald", "random"),
        initial=40,
        round_size=40,
        eval_frac=0.1,
    )
    report = run_auto(
        uris, rows, LabelsFileOracle(str(oracle_file)), config, out_dir=tmp_path / "a"
    )
    in_memory = run_auto(
        uris, X, LabelsFileOracle(str(oracle_file)), config, out_dir=tmp_path / "b"
    )
    assert report.winner == in_memory.winner
    assert (tmp_path / "a" / "labeled.csv").read_text() == (
        tmp_path / "b" / "labeled.csv"
    ).read_text()
    with pytest.raises(UsageError, match="coreset need the pool's embeddings in memory"):
        run_auto(
            uris,
            rows,
            LabelsFileOracle(str(oracle_file)),
            AutoConfig(
                target_accuracy=0.9, budget=100, strategies=("coreset", "margin"), eval_frac=0.1
            ),
            out_dir=tmp_path / "c",
        )
