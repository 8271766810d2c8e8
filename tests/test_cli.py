"""The command line, in every output mode: CliRunner for breadth, one real subprocess for truth.

A tiny random-init model (mobilenet_v3_small at 32 px) keeps these fast; the real weights are
exercised by the model tests and the demo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alcli import __version__
from alcli.cli import app

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]


def run(runner: CliRunner, *args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_version(runner: CliRunner) -> None:
    result = run(runner, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"alcli {__version__}"


def test_embed_json_reports_counts_and_skipped_items(runner, png_pool, broken_images, tmp_path):
    png_pool(6)
    broken_images(tmp_path / "pool")
    result = run(runner, "embed", str(tmp_path / "pool"), *TINY, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["items"] == 9
    assert (summary["embedded"], summary["cached"], summary["failed"]) == (6, 0, 3)
    reasons = {Path(f["uri"]).name: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"corrupt.png", "empty.png", "text.jpg"}
    assert reasons["empty.png"].startswith("empty")
    assert set(summary["stages"]["stages"]) >= {"prefetch", "preprocess", "infer"}

    warm = json.loads(run(runner, "embed", str(tmp_path / "pool"), *TINY, "--json").stdout)
    assert (warm["embedded"], warm["cached"]) == (0, 6)
    assert warm["failed"] == 3  # remembered: the broken files are not read again


@pytest.mark.parametrize("streams", ["1", "3"])
def test_embed_model_streams_option(runner, png_pool, tmp_path, streams):
    png_pool(5)
    args = ("embed", str(tmp_path / "pool"), *TINY, "--batch-size", "2", "--json")
    result = run(runner, *args, "--model-streams", streams, "--cache-dir", str(tmp_path / streams))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stages"]["model_streams"] == int(streams)
    assert summary["embedded"] == 5


def test_embed_rejects_zero_model_streams(runner, png_pool, tmp_path):
    png_pool(1)
    result = run(runner, "embed", str(tmp_path / "pool"), *TINY, "--model-streams", "0")
    assert result.exit_code == 2
    assert "--model-streams" in result.stderr


def test_embed_human_and_quiet_keep_stdout_clean(runner, png_pool, tmp_path):
    png_pool(3)
    human = run(runner, "embed", str(tmp_path / "pool"), *TINY)
    assert human.exit_code == 0
    assert human.stdout == ""
    assert "3 items" in human.stderr
    quiet = run(runner, "embed", str(tmp_path / "pool"), *TINY, "--quiet")
    assert quiet.exit_code == 0
    assert quiet.stdout == ""
    assert quiet.stderr == ""


def test_pool_from_stdin(runner, png_pool):
    paths = png_pool(3)
    result = run(runner, "embed", "-", *TINY, "--json", input="\n".join(map(str, paths)) + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["embed", "does/not/exist"], "does/not/exist"),
        (["embed"], "no POOL given"),
        (["embed", ".", "--model", "mobilenet_v9"], "mobilenet_v"),
        (["slect"], "Did you mean 'select'"),
        (["embed", ".", "--batch-size", "0"], "--batch-size"),
        (["select", ".", "--strategy", "margn", "--budget", "3"], "margin"),
        (["bench", "does/not/exist"], "does/not/exist"),
        (["bench"], "no POOL given"),
        (["bench", ".", "--limit", "0"], "--limit"),
        (["bench", ".", "--rounds", "0"], "--rounds"),
        (["bench", ".", "--model", "mobilenet_v9"], "did you mean"),
        (["bench", ".", "--weights", "IMAGENET9K"], "unknown weights"),
        (["bench", ".", "--strategies", "margin,marign"], "did you mean 'margin'?"),
        (["bench", ".", "--strategies", "zzz*"], "no strategy matches 'zzz*'"),
        (["bench", ".", "--strategies", "margin", "--no-strategies"], "contradict"),
        (["bench", ".", "--budget", "0"], "--budget"),
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


def test_debug_shows_the_traceback(runner):
    result = run(runner, "embed", "does/not/exist", "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_config_file_supplies_pool_and_options(runner, png_pool, tmp_path):
    png_pool(4, subdir="imgs")
    (tmp_path / "alcli.toml").write_text(
        'pool = "imgs"\nmodel = "mobilenet_v3_small"\nweights = "none"\n'
        "[embed]\nimage-size = 32\nbatch-size = 2\n"
    )
    result = run(runner, "embed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 4
    # The command line wins over the file.
    again = run(runner, "embed", "--json", "--image-size", "40")
    assert json.loads(again.stdout)["embedded"] == 4  # another fingerprint: nothing stale


def test_config_typo_suggests_the_option(runner, tmp_path):
    (tmp_path / "cfg.toml").write_text("[embed]\nimage_sise = 32\n")
    result = run(runner, "embed", ".", "--config", "cfg.toml")
    assert result.exit_code == 2
    assert "did you mean 'image_size'" in result.stderr


@pytest.mark.slow
def test_real_subprocess_json_and_exit_codes(png_pool, tmp_path):
    png_pool(3)
    env = {**os.environ, "ALCLI_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "alcli", "embed", str(tmp_path / "pool"), *TINY]
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["embedded"] == 3
    bad = subprocess.run(
        [sys.executable, "-m", "alcli", "embed", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("alcli: error:")


@pytest.mark.parametrize("args", [["strategies"], ["strategies", "--json"], ["bench", "--help"]])
def test_a_reader_that_closes_early_gets_no_error(args) -> None:
    """`alcli ... | head`: the reader going away is not an internal error."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "alcli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # before the program writes anything
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in {0, 1, 141}
    assert stderr == ""
