"""`alcli select`, `alcli strategies` and `alcli auto` end to end, on real MNIST PNGs and S3.

A tiny random-init backbone (mobilenet_v3_small, 32 px) keeps it fast; what is under test is
the command line over the real pipeline, cache, heads, strategies and agent.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alcli.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.mnist_pool import make_pools

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """160 training digits (pool), 60 test digits (eval), and 40 labels 'bought so far'."""
    root = tmp_path_factory.mktemp("mnist")
    pools = make_pools(root, train=160, test=60)
    rows = list(csv.reader(pools["train"].labels_csv.open()))
    labeled = root / "labeled.csv"
    with labeled.open("w", newline="") as f:
        csv.writer(f).writerows(rows[:41])  # header + 40
    return {"pools": pools, "labeled": labeled, "labeled_uris": {r[0] for r in rows[1:41]}}


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_select_margin_every_format(runner, mnist):
    pool = mnist["pools"]["train"].directory
    base = ["select", pool, *TINY, "-s", "margin", "-b", "10", "-l", mnist["labeled"]]
    plain = invoke(runner, *base)
    assert plain.exit_code == 0, plain.output
    uris = plain.stdout.split()
    assert len(uris) == len(set(uris)) == 10
    assert not set(uris) & mnist["labeled_uris"]
    assert all(Path(u).parent == pool for u in uris)
    assert invoke(runner, *base).stdout.split() == uris  # deterministic, warm cache

    rows = list(csv.DictReader(invoke(runner, *base, "--format", "csv").stdout.splitlines()))
    assert [r["uri"] for r in rows] == uris
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)  # margin: smallest first
    lines = invoke(runner, *base, "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["rank"] for line in lines] == list(range(1, 11))
    doc = json.loads(invoke(runner, *base, "--json").stdout)
    assert (doc["strategy"], doc["picked"], doc["labeled"]) == ("margin", 10, 40)
    quiet = invoke(runner, *base, "--quiet")
    assert quiet.stdout.split() == uris
    assert quiet.stderr == ""


def test_select_cold_start_needs_no_labels_and_margin_explains(runner, mnist):
    pool = mnist["pools"]["train"].directory
    cold = invoke(runner, "select", pool, *TINY, "-s", "typiclust", "-b", "5")
    assert cold.exit_code == 0, cold.output
    assert len(cold.stdout.split()) == 5
    bad = invoke(runner, "select", pool, *TINY, "-s", "margin", "-b", "5")
    assert bad.exit_code == 2
    assert "typiclust" in bad.stderr
    assert "--labeled" in bad.stderr


def test_select_as_typed_with_alcli_toml(runner, mnist, tmp_path):
    (tmp_path / "alcli.toml").write_text(
        f'pool = "{mnist["pools"]["train"].directory}"\nmodel = "mobilenet_v3_small"\n'
        f'weights = "none"\nimage-size = 32\n[select]\nlabeled = "{mnist["labeled"]}"\n'
    )
    result = invoke(runner, "select", "--strategy", "margin", "--budget", "7")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split()) == 7


def test_select_rejects_labels_outside_the_pool(runner, mnist, tmp_path):
    stray = tmp_path / "stray.csv"
    stray.write_text("uri,label\n/nowhere/a.png,1\n/nowhere/b.png,2\n")
    result = invoke(
        runner,
        "select",
        mnist["pools"]["train"].directory,
        *TINY,
        "-s",
        "margin",
        "-b",
        "3",
        "-l",
        stray,
    )
    assert result.exit_code == 2
    assert "2 labeled URIs are not in the pool" in result.stderr


def test_select_with_your_own_probabilities(runner, tmp_path):
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.5, 0.5], [0.7, 0.3]], dtype=np.float32)
    np.save(tmp_path / "p.npy", probs)
    (tmp_path / "lab.csv").write_text("uri,label\n0,a\n")
    result = invoke(
        runner,
        "select",
        "--probs",
        tmp_path / "p.npy",
        "-s",
        "margin",
        "-b",
        "2",
        "-l",
        tmp_path / "lab.csv",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["2", "1"]


@pytest.mark.s3
def test_select_on_s3_and_warm_rerun_makes_no_get(runner, s3_bucket, s3_traffic, png_pool):
    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for path in png_pool(12):
        fs.put_file(str(path), f"{bucket}/imgs/{path.name}")
    endpoint = options["client_kwargs"]["endpoint_url"]
    args = [
        "select",
        f"s3://{bucket}/imgs/",
        *TINY,
        "-s",
        "coreset",
        "-b",
        "4",
        "--endpoint-url",
        endpoint,
    ]
    first = invoke(runner, *args)
    assert first.exit_code == 0, first.output
    picks = first.stdout.split()
    assert len(picks) == 4
    assert all(p.startswith(f"s3://{bucket}/imgs/") for p in picks)
    s3_traffic.reset()
    again = invoke(runner, *args)
    assert again.stdout.split() == picks
    assert s3_traffic.count(kind="get") == 0


def test_strategies_command(runner):
    table = invoke(runner, "strategies")
    assert table.exit_code == 0
    assert "margin" in table.stdout
    assert "coreset" in table.stdout
    listed = json.loads(invoke(runner, "strategies", "*margin*", "--json").stdout)
    assert {s["name"] for s in listed} == {"margin", "cluster_margin"}
    assert invoke(runner, "strategies", "nothing-like-this").exit_code == 2


def test_auto_as_typed_with_alcli_toml(runner, mnist, tmp_path):
    pools = mnist["pools"]
    (tmp_path / "alcli.toml").write_text(
        f'pool = "{pools["train"].directory}"\nmodel = "mobilenet_v3_small"\nweights = "none"\n'
        f'image-size = 32\n[auto]\noracle = "{pools["train"].labels_csv}"\n'
        f'eval = "{pools["test"].labels_csv}"\nstrategies = "margin,random"\n'
        'initial = 20\nround-size = 20\nout = "run"\n'
    )
    result = invoke(runner, "auto", "--target-acc", "0.99", "--budget", "80", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels_bought"] <= 80
    assert report["stop_reason"] in {"budget", "target", "plateau"}
    for name in ("labeled.csv", "rounds.csv", "report.json", "curves.png"):
        assert (tmp_path / "run" / name).exists(), name
    again = invoke(runner, "auto", "--target-acc", "0.99", "--budget", "80")
    assert again.exit_code == 2  # the folder holds a run: --resume, or another --out
    assert "--resume" in again.stderr


def test_auto_with_humans_in_the_loop_waits_then_resumes(runner, mnist, tmp_path):
    pools = mnist["pools"]
    truth = dict(list(csv.reader(pools["train"].labels_csv.open()))[1:])
    args = [
        "auto",
        pools["train"].directory,
        *TINY,
        "--oracle",
        f"dir:{tmp_path / 'inbox'}",
        "--eval",
        pools["test"].labels_csv,
        "--strategies",
        "margin",
        "--initial",
        "10",
        "--round-size",
        "10",
        "--target-acc",
        "0.99",
        "--budget",
        "30",
        "--out",
        tmp_path / "run",
        "--json",
    ]
    for _ in range(10):
        result = invoke(runner, *args)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        if doc.get("status") != "waiting_for_labels":
            break
        with open(doc["batch"]) as f:
            batch = list(csv.DictReader(f))
        with open(doc["labels"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["uri", "label"])
            writer.writerows((row["uri"], truth[row["uri"]]) for row in batch)
        args = [
            "auto",
            pools["train"].directory,
            *TINY,
            "--oracle",
            f"dir:{tmp_path / 'inbox'}",
            "--eval",
            pools["test"].labels_csv,
            "--resume",
            tmp_path / "run",
            "--json",
        ]
    assert doc["labels_bought"] == 30
