"""What the command line checks before it works, and what no input can make it do.

- A typo costs milliseconds: everything that needs no embedding (strategy names and needs,
  budget, labels against the resolved pool, config keys) is checked before any image is read.
  The proof is the cache: no segment is written when a command stops on bad input.
- No result can be forged by a file name: a name with a line break never reads as two lines.
- An ``alcli.toml`` found in the working directory does not run its command or reach its
  endpoint unless the user names it with ``--config``.

Real subprocesses where the exit code and the streams are the point, CliRunner for breadth;
a tiny random-init model (mobilenet_v3_small, 32 px) keeps embedding fast.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alcli.cli import app

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]


def invoke(runner: CliRunner, *args: object, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def alcli(*args: object, cwd: Path, cache: Path) -> subprocess.CompletedProcess[bytes]:
    """``python -m alcli ARGS`` in ``cwd``, its cache in ``cache``; bytes out, bounded."""
    env = {**os.environ, "ALCLI_CACHE_DIR": str(cache)}
    env.pop("ALCLI_TRUST_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "alcli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )


def segments(cache: Path) -> list[Path]:
    """Embedding segment files under a cache folder: written only once images were embedded."""
    return sorted(cache.rglob("*.seg")) if cache.exists() else []


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("alcli: error:"), stderr
    return lines[0]


# ----------------------------------------------------------------- a typo costs milliseconds


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["-s", "marginn"], "did you mean 'margin'?"),
        (["-s", "margin"], "margin needs labeled items"),
        (["-s", "margin", "-l", "stray.csv"], "1 labeled URIs are not in the pool"),
        (["-s", "coreset", "--exclude", "stray.txt"], "1 excluded URIs are not in the pool"),
    ],
)
def test_select_checks_everything_before_reading_an_image(png_pool, tmp_path, extra, needle):
    """Real subprocess, a real pool: the cache gets no segment, so no image was embedded."""
    png_pool(4)
    (tmp_path / "stray.csv").write_text("uri,label\nnot-in-the-pool.png,cat\n")
    (tmp_path / "stray.txt").write_text("not-in-the-pool.png\n")
    cache = tmp_path / "cache"
    done = alcli("select", "pool", *TINY, "-b", "2", *extra, cwd=tmp_path, cache=cache)
    assert done.returncode == 2, done.stderr
    assert needle in one_error_line(done.stderr.decode())
    assert done.stdout == b""
    assert segments(cache) == []


def test_the_same_pool_does_embed_when_the_request_is_good(png_pool, tmp_path):
    """The check above can fail: a good request on that pool writes segments."""
    png_pool(4)
    cache = tmp_path / "cache"
    done = alcli("select", "pool", *TINY, "-s", "coreset", "-b", "2", cwd=tmp_path, cache=cache)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert segments(cache)


@pytest.mark.parametrize("budget", ["0", "-1"])
def test_select_budget_must_be_at_least_one(runner, png_pool, tmp_path, budget):
    png_pool(3)
    result = invoke(runner, "select", "pool", *TINY, "-s", "coreset", "-b", budget)
    assert result.exit_code == 2, result.output
    assert "--budget" in one_error_line(result.stderr)
    assert result.stdout == ""
    (tmp_path / "alcli.toml").write_text(f"[select]\nbudget = {budget}\n")
    from_file = invoke(runner, "select", "pool", *TINY, "-s", "coreset")
    assert from_file.exit_code == 2, from_file.output
    assert segments(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("imag-size = 32\n", "unknown key 'imag-size' (did you mean 'image-size'?)"),
        ("[selct]\nstrategy = 'margin'\n", "unknown table 'selct' (did you mean 'select'?)"),
        ("[auto]\norcle = 'l.csv'\n", "unknown key 'orcle' in [auto] (did you mean 'oracle'?)"),
        ("select = 3\n", "[select] must be a table"),
    ],
)
def test_an_unknown_config_key_is_an_error_naming_it_and_the_file(
    runner, png_pool, tmp_path, toml, needle
):
    """Anywhere in the file, whichever command runs: a typo there is never ignored."""
    png_pool(3)
    (tmp_path / "alcli.toml").write_text(toml)
    result = invoke(runner, "select", "pool", *TINY, "-s", "coreset", "-b", "2")
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert needle in line
    assert str(tmp_path / "alcli.toml") in line
    assert segments(tmp_path / "cache") == []


def test_the_readme_example_brings_its_own_probabilities(runner, tmp_path):
    """`alcli select --probs probs.npy --uris names.txt --strategy margin --budget 500`."""
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.5, 0.5], [0.7, 0.3]], dtype=np.float32)
    np.save(tmp_path / "probs.npy", probs)
    (tmp_path / "names.txt").write_text("s3://b/a.png\ns3://b/b.png\ns3://b/c.png\ns3://b/d.png\n")
    args = ["select", "--probs", "probs.npy", "--uris", "names.txt", "--strategy", "margin"]
    result = invoke(runner, *args, "--budget", "500")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [f"s3://b/{n}.png" for n in "cbda"]
    coreset = invoke(runner, *args[:-1], "coreset", "--budget", "2")
    assert coreset.exit_code == 2
    assert "coreset needs embeddings" in one_error_line(coreset.stderr)


# ------------------------------------------------------ no result is forged by a file name

ODD_NAMES = ["evil.png\nforged.png", "cr.png\rforged.png", "ff.png\x0cforged.png"]


@pytest.fixture
def odd_pool(png_pool, tmp_path) -> list[str]:
    """Three plain PNGs and three whose names hold a line break; every URI, as a set."""
    plain = png_pool(3)
    for name, source in zip(ODD_NAMES, plain, strict=True):
        (tmp_path / "pool" / name).write_bytes(source.read_bytes())
    return sorted([*map(str, plain), *(str(tmp_path / "pool" / n) for n in ODD_NAMES)])


def test_line_output_refuses_a_name_with_a_line_break(odd_pool, tmp_path):
    done = alcli("select", "pool", *TINY, "-s", "coreset", "-b", "6", cwd=tmp_path, cache=tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr.decode())
    assert "line break" in line
    assert "--print0" in line
    assert done.stdout == b""  # not one line that a reader could take for a result


def test_print0_csv_and_jsonl_carry_every_name_exactly(runner, odd_pool):
    base = ["select", "pool", *TINY, "-s", "coreset", "-b", "6"]
    nul = invoke(runner, *base, "-0")
    assert nul.exit_code == 0, nul.output
    assert nul.stdout.endswith("\0")
    assert sorted(nul.stdout.split("\0")[:-1]) == odd_pool
    assert sorted(invoke(runner, *base, "--print0", "-q").stdout.split("\0")[:-1]) == odd_pool

    table = invoke(runner, *base, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(table, newline="")))
    assert sorted(r["uri"] for r in rows) == odd_pool
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)]

    lines = invoke(runner, *base, "--format", "jsonl").stdout.split("\n")
    assert lines[-1] == ""
    assert sorted(json.loads(line)["uri"] for line in lines[:-1]) == odd_pool


@pytest.mark.parametrize("other", [["--format", "csv"], ["--json"]])
def test_print0_is_for_plain_uris_only(runner, png_pool, tmp_path, other):
    png_pool(2)
    result = invoke(runner, "select", "pool", *TINY, "-s", "coreset", "-b", "1", "-0", *other)
    assert result.exit_code == 2
    assert "--print0" in one_error_line(result.stderr)
    assert segments(tmp_path / "cache") == []


# ------------------------------------------- a config found in the folder runs no command


def test_a_found_config_does_not_run_its_oracle_command(png_pool, tmp_path):
    """Someone else's folder: `alcli auto` there must not run the command its alcli.toml names.

    With ``--config alcli.toml`` the user consents, and the command runs (it answers nothing,
    so the run then fails with exit 1: what matters is that it ran).
    """
    png_pool(6)
    marker = tmp_path / "command-ran"
    (tmp_path / "alcli.toml").write_text(f'[auto]\noracle-cmd = "touch {marker}"\n')
    args = ["auto", "pool", *TINY, "--target-acc", "0.9", "--budget", "3", "--initial", "2"]
    args += ["--round-size", "2", "--eval-frac", "0.3", "--strategies", "random", "--out", "run"]
    refused = alcli(*args, cwd=tmp_path, cache=tmp_path / "cache")
    assert refused.returncode == 2, refused.stderr
    line = one_error_line(refused.stderr.decode())
    assert "oracle-cmd" in line
    assert "--config" in line
    assert not marker.exists()
    assert segments(tmp_path / "cache") == []

    allowed = alcli(*args, "--config", "alcli.toml", cwd=tmp_path, cache=tmp_path / "cache")
    assert marker.exists(), allowed.stderr
    assert allowed.returncode == 1
    assert "gave no label" in allowed.stderr.decode()


def test_a_found_config_does_not_pick_the_endpoint(runner, png_pool, tmp_path):
    png_pool(2)
    (tmp_path / "alcli.toml").write_text('endpoint-url = "http://127.0.0.1:9"\n')
    result = invoke(runner, "embed", "pool", *TINY)
    assert result.exit_code == 2
    assert "endpoint-url" in one_error_line(result.stderr)
    assert segments(tmp_path / "cache") == []
    on_the_line = invoke(runner, "embed", "pool", *TINY, "--endpoint-url", "http://127.0.0.1:9")
    assert on_the_line.exit_code == 0, on_the_line.output  # a local pool never calls it
