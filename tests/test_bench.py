"""``alcli bench`` in every output mode, on local and S3 pools, and its pieces in alcli.bench.

A tiny random-init model (mobilenet_v3_small at 32 px) on a handful of PNGs keeps each run to
a few seconds; what is checked is the report's shape and honesty (the first N items, failures
counted, the user's cache and the temporary folder left as they were), not the speeds. The
strategy timings run on pools of a few rows; the memory cap is tested by shrinking it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import alcli.bench
from alcli.bench import (
    ModelOnly,
    default_budget,
    diagnose,
    sequential_ips,
    strategy_names,
    synthetic_inputs,
    time_strategies,
)
from alcli.cli import app
from alcli.cli.bench import _render_strategies
from alcli.embedding import EmbedOptions
from alcli.errors import StrategyError, UsageError
from alcli.pipeline import cpu_streams
from alcli.sources import resolve_pool

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
SMALL = [*TINY, "--batch-size", "4", "--io-threads", "4"]
KINDS = {"model", "build", "contention", "io", "decode", "ramp"}  # every kind diagnose names


@pytest.fixture
def runner(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """conftest's runner, with temporary folders under ``tmp_path / "tmp"`` to check."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return runner


def run(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args))


def assert_left_nothing(tmp_path: Path) -> None:
    """The user's cache was never created and the throw-away caches are gone."""
    assert not (tmp_path / "cache").exists()
    assert list((tmp_path / "tmp").glob("alcli-bench-*")) == []


@pytest.mark.slow
def test_json_reports_the_first_n_items_failures_and_stages(
    runner, png_pool, broken_images, tmp_path
):
    png_pool(10)
    broken_images(tmp_path / "pool")  # corrupt.png, empty.png sort first; text.jpg last
    result = run(runner, "bench", "pool", *SMALL, "--limit", "12", "--rounds", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["pool_items"], report["items"], report["embedded"]) == (13, 12, 10)
    assert report["failed"] == 2
    assert {Path(f["uri"]).name for f in report["failures"]} == {"corrupt.png", "empty.png"}
    assert sum(report["failure_reasons"].values()) == 2
    for key in (
        "model_only_ips",
        "pipeline_ips",
        "cold_ips",
        "warm_ips",
        "sequential_ips",
        "pipeline_vs_bound",
        "pipeline_vs_sequential",
    ):
        assert report[key] > 0, key
    assert report["bottleneck"] in KINDS
    assert report["hint"]
    assert set(report["stages"]) == {"prefetch", "preprocess", "infer"}
    assert all(stage["busy_s"] >= 0 for stage in report["stages"].values())
    assert report["stages"]["prefetch"]["threads"] == 4
    assert len(report["rounds"]) == 2
    assert all(r["sequential_ips"] > 0 for r in report["rounds"])
    assert report["settings"]["sequential_torch_threads"] >= 1
    assert report["settings"]["image_size"] == 32
    assert report["settings"]["bound_items"] == 10
    assert report["machine"]["device"] == "cpu"
    assert report["seconds"]["estimate_cold_pool"] > 0
    assert "round 2/2" in result.stderr  # progress on stderr only
    assert_left_nothing(tmp_path)


def test_human_output_is_tables_on_stdout(runner, png_pool, tmp_path):
    png_pool(6)
    result = run(runner, "bench", "pool", *SMALL, "--limit", "4")
    assert result.exit_code == 0, result.output
    for needle in (
        "4 of 6 items",
        "model only (bound)",
        "pipeline, cold",
        "plain sequential loop",
        "pipeline vs plain sequential loop",
        "prefetch",
        "hint:",
        "strategies: budget 10 from 6 x ",  # the default budget, clipped by the registry
        *alcli.bench.DEFAULT_STRATEGIES,  # the default set, one row each
        "synthetic float32 inputs",
    ):
        assert needle in result.stdout, needle
    assert "failed" not in result.stdout
    assert "ESTIMATE" not in result.stdout
    assert "round 1/1" in result.stderr
    assert "strategy kmeans" in result.stderr
    assert "round" not in result.stdout
    assert_left_nothing(tmp_path)


def test_json_times_the_strategies_asked_for(runner, png_pool, tmp_path):
    png_pool(6)
    args = ["--strategies", "margin, coreset", "--budget", "3", "--json"]
    result = run(runner, "bench", "pool", *SMALL, "--limit", "4", *args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sequential_ips"] > 0
    assert report["pipeline_vs_sequential"] > 0
    bench = report["strategies"]
    assert (bench["pool_items"], bench["strategy_rows"], bench["estimate"]) == (6, 6, False)
    assert (bench["budget"], bench["labeled"], bench["committee"]) == (3, 1, 0)
    assert bench["dim"] > 0
    assert [row["name"] for row in bench["results"]] == ["margin", "coreset"]
    for row in bench["results"]:
        assert row["error"] is None
        assert row["picks"] == 3
        assert row["seconds"] >= 0
        assert row["pool_seconds"] == row["seconds"]
    assert_left_nothing(tmp_path)


def test_no_strategies_leaves_them_out(runner, png_pool):
    png_pool(4)
    result = run(runner, "bench", "pool", *SMALL, "--no-strategies", "--json")
    assert result.exit_code == 0, result.output
    assert "strategies" not in json.loads(result.stdout)
    assert "strateg" not in result.stderr


def test_memory_cap_times_fewer_rows_and_says_it_estimates(runner, png_pool, monkeypatch):
    png_pool(8)
    monkeypatch.setattr(alcli.bench, "STRATEGY_INPUT_BYTES", 1)  # fits nothing: the 2-row floor
    args = ["--strategies", "random", "--budget", "1", "--json"]
    result = run(runner, "bench", "pool", *SMALL, "--limit", "4", *args)
    assert result.exit_code == 0, result.output
    bench = json.loads(result.stdout)["strategies"]
    assert (bench["pool_items"], bench["strategy_rows"], bench["estimate"]) == (8, 2, True)
    assert "ESTIMATE" in bench["note"]
    (row,) = bench["results"]
    assert row["pool_seconds"] == pytest.approx(4 * row["seconds"], abs=5e-4)  # both rounded
    assert "capped" in result.stderr


def test_quiet_prints_only_the_key_number(runner, png_pool):
    png_pool(4)
    result = run(runner, "bench", "pool", *SMALL, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1
    assert float(result.stdout) > 0


def test_a_pool_with_no_usable_item_is_exit_2(runner, broken_images, tmp_path):
    broken_images()
    result = run(runner, "bench", "broken", *TINY)
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]  # after the progress notes
    assert last.startswith("alcli: error: none of the first 3 items could be embedded")
    assert "Traceback" not in result.output
    assert_left_nothing(tmp_path)


@pytest.mark.s3
def test_bench_on_an_s3_pool(runner, s3_bucket, png_pool, tmp_path):
    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for path in png_pool(6):
        fs.put_file(str(path), f"{bucket}/imgs/{path.name}")
    endpoint = options["client_kwargs"]["endpoint_url"]
    result = run(
        runner,
        "bench",
        f"s3://{bucket}/imgs/",
        *SMALL,
        "--limit",
        "5",
        "--endpoint-url",
        endpoint,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pool"] == f"s3://{bucket}/imgs/"
    assert (report["pool_items"], report["items"], report["failed"]) == (6, 5, 0)
    assert report["pipeline_ips"] > 0
    assert_left_nothing(tmp_path)


@pytest.mark.slow
def test_real_subprocess_json(png_pool, tmp_path):
    png_pool(5)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "ALCLI_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(scratch)}
    script = Path(sys.executable).with_name("alcli")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "alcli"]
    done = subprocess.run(
        [*command, "bench", str(tmp_path / "pool"), *SMALL, "--limit", "4", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["items"], report["embedded"]) == (4, 4)
    assert_left_nothing(tmp_path)


def test_model_only_skips_undecodable_blobs_and_caps_its_tensors(png_pool):
    blobs = [path.read_bytes() for path in png_pool(5)]
    options = EmbedOptions("mobilenet_v3_small", "none", 32, batch_size=2)
    bound = ModelOnly([b"not an image", *blobs], options)
    assert bound.count == 5
    assert [len(batch) for batch in bound.batches] == [2, 2, 1]
    capped = ModelOnly(blobs, options, max_bytes=1)  # stops at the first whole batch
    assert capped.count == 2
    by_layout = capped.measure()
    assert all(ips > 0 for ips in by_layout.values())
    threads = capped.default_threads
    streams = cpu_streams(threads)  # the pipeline's own CPU layout is a candidate too
    assert set(by_layout) == {"1x1", f"1x{threads}", f"{streams}x{max(1, threads // streams)}"}
    with pytest.raises(UsageError):
        ModelOnly([b"junk"], options)


def _stage(utilization: float, threads: int = 1, per_busy_s: float = 100.0) -> dict[str, float]:
    return {"threads": threads, "utilization": utilization, "items_per_busy_s": per_busy_s}


@pytest.mark.parametrize(
    ("ratio", "read", "decode", "infer", "kind", "needle"),
    [
        (0.95, 0.1, 0.2, 0.95, "model", "model bound"),
        (0.40, 0.1, 0.2, 0.95, "contention", "CPU contention"),
        (0.40, 0.95, 0.2, 0.40, "io", "--io-threads (now 16)"),
        (0.40, 0.1, 0.9, 0.40, "decode", "--decode-threads (now 1"),
        (0.40, 0.1, 0.2, 0.40, "ramp", "--limit"),
    ],
)
def test_diagnose_names_the_bottleneck(ratio, read, decode, infer, kind, needle):
    stages = {"prefetch": _stage(read, 16), "preprocess": _stage(decode), "infer": _stage(infer)}
    got_kind, hint = diagnose(
        ratio, stages, bound_ips=200.0, io_threads=16, decode_threads=1, cores=2
    )
    assert got_kind == kind
    assert needle in hint


def test_a_gap_the_model_build_explains_is_named_so():
    stages = {"prefetch": _stage(0.1, 2), "preprocess": _stage(0.2), "infer": _stage(0.95)}
    kind, hint = diagnose(
        0.80,
        stages,
        bound_ips=200.0,
        io_threads=2,
        decode_threads=2,
        cores=2,
        build_wait_s=0.25,
        wall_s=1.4,
    )
    assert kind == "build"
    assert "waited 0.25 s" in hint
    # the same gap with no build wait is contention
    assert diagnose(0.80, stages, bound_ips=200.0, io_threads=2, decode_threads=2, cores=2)[0] == (
        "contention"
    )


def test_sequential_loop_skips_bad_items_but_counts_them(png_pool, broken_images, tmp_path):
    png_pool(3)
    broken_images(tmp_path / "pool")
    pool = resolve_pool(str(tmp_path / "pool"))
    options = EmbedOptions("mobilenet_v3_small", "none", 32, batch_size=2)
    assert len(pool.items) == 6
    assert sequential_ips(pool, options, threads=1) > 0
    assert sequential_ips(str(tmp_path / "pool"), options) > 0  # a spec is listed inside


def test_strategy_names_take_lists_globs_families_and_all():
    assert strategy_names("margin, coreset,margin") == ["margin", "coreset"]
    assert strategy_names(["Least-Confidence"]) == ["least_confidence"]
    assert strategy_names("*margin*") == ["margin", "cluster_margin"]
    assert strategy_names("disagreement") == ["bald", "vote_entropy"]
    assert len(strategy_names("all")) >= 14
    assert strategy_names(None) == strategy_names("") == []
    with pytest.raises(StrategyError, match="did you mean 'coreset'"):
        strategy_names("margin,corset")
    with pytest.raises(UsageError, match="no strategy matches"):
        strategy_names("nothing*")


@pytest.mark.parametrize(("n", "budget"), [(1, 10), (2_500, 25), (10**9, 10_000)])
def test_default_budget_is_one_percent_within_bounds(n, budget):
    assert default_budget(n) == budget


def test_synthetic_inputs_are_seeded_float32_blobs():
    first = synthetic_inputs(500, 8, committee=3)
    again = synthetic_inputs(500, 8, committee=3)
    assert first.keys() == again.keys()
    for key, array in first.items():
        assert array is not None
        np.testing.assert_array_equal(array, again[key])
    embeddings, probs, committee, labeled = (
        first["embeddings"],
        first["probs"],
        first["committee"],
        first["labeled"],
    )
    assert embeddings is not None
    assert probs is not None
    assert committee is not None
    assert labeled is not None
    assert (embeddings.shape, embeddings.dtype) == ((500, 8), np.float32)
    assert (probs.shape, probs.dtype) == ((500, 10), np.float32)
    assert committee.shape == (3, 500, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (labeled.dtype, int(labeled.sum())) == (np.bool_, 5)
    assert synthetic_inputs(10, 8)["committee"] is None


def test_time_strategies_caps_rows_and_renders_the_estimate():
    per_row = alcli.bench.input_bytes_per_row(16, alcli.bench.STRATEGY_COMMITTEE)
    bench = time_strategies(
        ["margin", "bald"], pool_items=1_000, dim=16, budget=5, memory_cap=250 * per_row
    )
    assert (bench.rows, bench.committee, bench.estimate) == (250, 5, True)
    for timing in bench.timings:
        assert timing.error is None
        assert timing.picks == 5
        assert timing.seconds is not None
        assert bench.pool_seconds(timing.seconds) == pytest.approx(4 * timing.seconds)
    data = bench.as_dict()
    console = Console(record=True, width=200)
    _render_strategies(data, console)
    text = console.export_text()
    for needle in ("s at 250", "s, est. for pool", "ESTIMATE"):
        assert needle in text, needle
    whole = time_strategies(["random"], pool_items=300, dim=16)
    assert (whole.rows, whole.estimate, whole.budget, whole.committee) == (300, False, 10, 0)
