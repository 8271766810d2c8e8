"""`alcli select`, `alcli strategies` and `alcli auto` end to end, on real MNIST PNGs and S3.

A tiny random-init backbone (mobilenet_v3_small, 32 px) keeps it fast; what is under test is
the command line over the real pipeline, cache, heads, strategies and agent.
"""

from __future__ import annotations

import csv
import json
import shlex
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


# --------------------------------------------------- auto: checked before it embeds or buys

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

#: An oracle command: looks each URI up in a uri,label CSV (argv[1]) and logs every request's
#: size to argv[2]; stdin is logged raw to argv[2] + ".stdin".
LOOKUP_ORACLE = """
import csv, sys
labels = dict(csv.reader(open(sys.argv[1], newline="")))
data = sys.stdin.buffer.read()
open(sys.argv[2] + ".stdin", "ab").write(data)
uris = data.decode().splitlines()
open(sys.argv[2], "a").write(f"{len(uris)}\\n")
for uri in uris:
    print(f"{uri},{labels.get(uri, 'a' if len(uri) % 2 else 'b')}")
"""


def in_words(labels_csv: Path, out: Path) -> Path:
    """The same labels in another vocabulary: '3' becomes 'three'."""
    rows = list(csv.reader(labels_csv.open()))
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *((uri, WORDS[int(y)]) for uri, y in rows[1:])])
    return out


def lookup_oracle(tmp_path: Path, labels: Path) -> tuple[str, Path]:
    """``--oracle-cmd`` text for LOOKUP_ORACLE over ``labels``, and its request log."""
    script = tmp_path / "oracle.py"
    script.write_text(LOOKUP_ORACLE)
    log = tmp_path / "oracle.log"
    return shlex.join([sys.executable, str(script), str(labels), str(log)]), log


def segments(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.seg")) if cache.exists() else []


AUTO_SMALL = [
    *TINY,
    "--target-acc",
    "0.99",
    "--budget",
    "40",
    "--initial",
    "20",
    "--round-size",
    "10",
    "--strategies",
    "margin,random",
]


def test_auto_labels_file_sharing_no_class_with_eval_stops_before_embedding(
    runner, mnist, tmp_path
):
    pools = mnist["pools"]
    words = in_words(pools["train"].labels_csv, tmp_path / "words.csv")
    args = ["auto", pools["train"].directory, *AUTO_SMALL, "--eval", pools["test"].labels_csv]
    result = invoke(runner, *args, "--oracle", words, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "share no class with the eval set" in result.stderr
    assert "'eight'" in result.stderr
    assert "'0'" in result.stderr
    assert segments(tmp_path / "cache") == []
    assert not (tmp_path / "run").exists()


def test_auto_oracle_in_another_vocabulary_stops_after_round_0_and_keeps_labels(
    runner, mnist, tmp_path
):
    """A command oracle's classes are known only once it answers: stop before round 1.

    The labels it sold are saved: resuming with an eval set in its vocabulary does not buy
    them again.
    """
    pools = mnist["pools"]
    words = in_words(pools["train"].labels_csv, tmp_path / "words.csv")
    command, log = lookup_oracle(tmp_path, words)
    args = ["auto", pools["train"].directory, *AUTO_SMALL, "--oracle-cmd", command]
    first = invoke(runner, *args, "--eval", pools["test"].labels_csv, "--out", tmp_path / "run")
    assert first.exit_code == 2, first.output
    assert "share no class with the eval set" in first.stderr
    assert "round 0:" in first.stderr
    assert "round 1:" not in first.stderr
    assert log.read_text().split() == ["20"]  # the initial set, nothing more

    words_eval = in_words(pools["test"].labels_csv, tmp_path / "words-eval.csv")
    resumed = invoke(runner, *args, "--eval", words_eval, "--resume", tmp_path / "run", "--json")
    assert resumed.exit_code == 0, resumed.output
    bought = json.loads(resumed.stdout)["labels_bought"]
    sizes = [int(n) for n in log.read_text().split()]
    assert sizes[0] == 20
    assert sum(sizes) == bought  # every label bought once


def test_auto_command_oracle_writing_non_utf8_is_one_line_exit_1(runner, mnist, tmp_path):
    code = "import sys; sys.stdin.read(); sys.stdout.buffer.write(b'x,\\xff\\n')"
    command = shlex.join([sys.executable, "-c", code])
    result = invoke(
        runner,
        "auto",
        mnist["pools"]["train"].directory,
        *AUTO_SMALL,
        "--oracle-cmd",
        command,
        "--eval-frac",
        "0.2",
        "--out",
        tmp_path / "run",
        "--quiet",
    )
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not UTF-8 text" in lines[0]
    assert "internal error" not in lines[0]


@pytest.mark.parametrize("case", ["holds-a-run", "under-a-file", "stray-oracle", "typo"])
def test_auto_checks_its_inputs_before_embedding(runner, mnist, tmp_path, case):
    pools = mnist["pools"]
    oracle, out, extra = pools["train"].labels_csv, tmp_path / "run", []
    if case == "holds-a-run":
        out.mkdir()
        (out / "state.json").write_text("{}")
        needle = "already holds an alcli auto run"
    elif case == "under-a-file":
        (tmp_path / "file").write_text("")
        out, needle = tmp_path / "file" / "run", "is not a folder"
    elif case == "stray-oracle":
        oracle = tmp_path / "stray.csv"
        oracle.write_text("uri,label\n/elsewhere/a.png,0\n")
        needle = "labels none of the pool's 160 items"
    else:
        extra, needle = ["--strategies", "margin,corset"], "did you mean 'coreset'?"
    result = invoke(
        runner,
        "auto",
        pools["train"].directory,
        *AUTO_SMALL,
        *extra,
        "--oracle",
        oracle,
        "--eval",
        pools["test"].labels_csv,
        "--out",
        out,
    )
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert segments(tmp_path / "cache") == []


def test_auto_leaves_out_names_a_command_oracle_cannot_be_sent(runner, png_pool, tmp_path):
    """A name with a line break would reach the command as two URIs: such an item is left
    out of the race (a warning), and the run goes on."""
    plain = png_pool(8)
    (tmp_path / "pool" / "evil.png\nforged.png").write_bytes(plain[0].read_bytes())
    labels = tmp_path / "none.csv"
    labels.write_text("uri,label\n")
    command, log = lookup_oracle(tmp_path, labels)
    result = invoke(
        runner,
        "auto",
        tmp_path / "pool",
        *TINY,
        "--oracle-cmd",
        command,
        "--eval-frac",
        "0.25",
        "--target-acc",
        "0.99",
        "--budget",
        "4",
        "--initial",
        "2",
        "--round-size",
        "2",
        "--strategies",
        "random",
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert "1 items left out" in result.stderr
    assert json.loads(result.stdout)["labels_bought"] >= 2  # the initial set, at least
    sent = Path(f"{log}.stdin").read_bytes()
    assert b"forged" not in sent
    assert b"evil" not in sent
