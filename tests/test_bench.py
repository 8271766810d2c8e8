"""``alcli bench`` in every output mode, on local and S3 pools, and its pieces in alcli.bench.

A tiny random-init model (mobilenet_v3_small at 32 px) on a handful of PNGs keeps each run to
a few seconds; what is checked is the report's shape and honesty (the first N items, failures
counted, the user's cache and the temporary folder left as they were), not the speeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alcli.bench import ModelOnly, diagnose
from alcli.cli import app
from alcli.embedding import EmbedOptions
from alcli.errors import UsageError

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
SMALL = [*TINY, "--batch-size", "4", "--io-threads", "4"]
KINDS = {"model", "contention", "io", "decode", "ramp"}


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ALCLI_CACHE_DIR", str(tmp_path / "cache"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    return CliRunner()


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
    for key in ("model_only_ips", "pipeline_ips", "cold_ips", "warm_ips", "pipeline_vs_bound"):
        assert report[key] > 0, key
    assert report["bottleneck"] in KINDS
    assert report["hint"]
    assert set(report["stages"]) == {"prefetch", "preprocess", "infer"}
    assert all(stage["busy_s"] >= 0 for stage in report["stages"].values())
    assert report["stages"]["prefetch"]["threads"] == 4
    assert len(report["rounds"]) == 2
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
    for needle in ("4 of 6 items", "model only (bound)", "pipeline, cold", "prefetch", "hint:"):
        assert needle in result.stdout, needle
    assert "failed" not in result.stdout
    assert "round 1/1" in result.stderr
    assert "round" not in result.stdout
    assert_left_nothing(tmp_path)


def test_quiet_prints_only_the_key_number(runner, png_pool):
    png_pool(4)
    result = run(runner, "bench", "pool", *SMALL, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1
    assert float(result.stdout) > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "does/not/exist"], "does/not/exist"),
        (["bench"], "no POOL given"),
        (["bench", ".", "--limit", "0"], "--limit"),
        (["bench", ".", "--rounds", "0"], "--rounds"),
        (["bench", ".", "--model", "mobilenet_v9"], "did you mean"),
        (["bench", ".", "--weights", "IMAGENET9K"], "unknown weights"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runner, png_pool, args, needle):
    png_pool(2, subdir=".")
    result = run(runner, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alcli: error:")
    assert needle in lines[0]
    assert "Traceback" not in result.output


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
    assert all(ips > 0 for ips in capped.measure().values())
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
