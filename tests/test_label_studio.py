"""Label Studio both ways: tasks out (``select --format label-studio``), exports back in
(``--labeled``, the directory oracle), and the live oracle (``auto --oracle label-studio://``).

The server tests run a real Label Studio 1.23.2 (``label_studio`` fixture, conftest.py) on
real MNIST digits with a tiny random-init backbone: a person's work is done through the same
REST API its web page uses (``POST /api/tasks/{id}/annotations``).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alcli.cli import app
from alcli.errors import LabelsError
from alcli.labels import (
    LOCAL_FILES_URL,
    detect_labels_format,
    image_uri,
    label_studio_tasks,
    load_labels,
    split_tasks,
    task_image,
)
from alcli.oracle import DirectoryOracle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.mnist_pool import make_pools

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
DIGITS = [str(d) for d in range(10)]


def invoke(runner: CliRunner, *args: object):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------ formats, no server


def test_task_image_round_trips_odd_names_and_refuses_outside_the_root(tmp_path):
    root = tmp_path / "root"
    names = ["a b.png", "x&y#z?.png", "ünï/cödé.png", "100%.png"]
    for name in names:
        uri = str(root / name)
        url = task_image(uri, str(root))
        assert url.startswith(LOCAL_FILES_URL)
        assert "&" not in url[len(LOCAL_FILES_URL) :]
        assert "#" not in url
        assert image_uri(url, str(root)) == uri
        assert image_uri("http://ls:8080" + url, str(root)) == uri  # an absolute URL too
    assert task_image("s3://bucket/k/a.png", None) == "s3://bucket/k/a.png"
    with pytest.raises(LabelsError, match="outside the document root"):
        task_image(str(tmp_path / "elsewhere.png"), str(root))
    with pytest.raises(LabelsError, match="document root"):
        task_image(str(root / "a.png"), None)


def test_tasks_carry_predictions_and_split_under_the_limits(tmp_path):
    uris = [f"s3://b/{i:05d}.png" for i in range(1000)]
    tasks = label_studio_tasks(
        uris,
        root=None,
        scores=[i / 1000 for i in range(999)] + [float("nan")],
        model_version="margin@abc",
        predicted=["7"] * 999 + [None],
    )
    first = tasks[0]["predictions"][0]
    assert first["model_version"] == "margin@abc"
    assert first["score"] == 0.0
    assert first["result"][0]["value"] == {"choices": ["7"]}
    assert "score" not in tasks[-1]["predictions"][0]
    assert not tasks[-1]["predictions"][0]["result"]
    by_count = split_tasks(tasks, max_tasks=300)
    assert [len(json.loads(d)) for d in by_count] == [300, 300, 300, 100]
    by_bytes = split_tasks(tasks, max_bytes=40_000)
    assert all(len(d.encode()) <= 40_000 for d in by_bytes)
    assert len(by_bytes) > 1
    assert [t for d in by_bytes for t in json.loads(d)] == tasks
    with pytest.raises(LabelsError, match="over the"):
        split_tasks(tasks, max_bytes=100)


def test_export_problems_name_the_task_and_exit_2(tmp_path, runner):
    export = [
        {"id": 7, "data": {"uri": "/p/a.png"}, "annotations": [{"id": 1, "result": []}]},
        {"id": 8, "data": {}, "annotations": [{"id": 2, "result": _choice("3")}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    with pytest.raises(LabelsError) as error:
        load_labels(path)
    assert "task 7: annotation 1 has no choice" in str(error.value)
    assert "task 8: no data.uri or data.image" in str(error.value)
    result = invoke(
        runner, "select", "--probs", _probs(tmp_path), "-s", "margin", "-b", "1", "--labeled", path
    )
    assert result.exit_code == 2, result.output
    assert "task 7" in result.output
    assert "Traceback" not in result.output
    bad = invoke(
        runner,
        "select",
        "--probs",
        _probs(tmp_path),
        "-s",
        "margin",
        "-b",
        "1",
        "--labeled",
        path,
        "--labels-format",
        "xml",
    )
    assert bad.exit_code == 2
    assert "--labels-format" in bad.output


def test_alcli_csv_is_still_detected(tmp_path):
    assert detect_labels_format("uri,label\na.png,cat\n") == "alcli"
    assert detect_labels_format('"annotation_id","choice","id","image"\n') == "label-studio-csv"
    assert detect_labels_format('[{"id": 1, "data": {}, "annotations": []}]') == "label-studio-json"
    assert detect_labels_format('[{"id": 1, "image": "x", "choice": "a"}]') == (
        "label-studio-json-min"
    )


def _choice(label: str) -> list[dict]:
    return [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def _probs(tmp_path: Path) -> Path:
    import numpy as np

    path = tmp_path / "probs.npy"
    np.save(path, np.full((4, 2), 0.5, dtype=np.float32))
    return path


# ------------------------------------------------------------------ against a real server


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """40 training digits (the pool) and 20 test digits (the eval set), real MNIST PNGs."""
    root = tmp_path_factory.mktemp("ls-digits")
    pools = make_pools(root, train=40, test=20)
    truth = dict(list(csv.reader(pools["train"].labels_csv.open()))[1:])
    return {"pools": pools, "truth": truth, "root": tmp_path_factory.getbasetemp()}


@pytest.mark.slow
def test_select_tasks_import_annotate_and_every_export_reads_back(
    label_studio, digits, runner, tmp_path
):
    pool, truth, root = digits["pools"]["train"].directory, digits["truth"], digits["root"]
    seed = tmp_path / "seed.csv"
    seed.write_text("uri,label\n" + "".join(f"{u},{truth[u]}\n" for u in sorted(truth)[:12]))
    picked = invoke(
        runner,
        "select",
        pool,
        *TINY,
        "-s",
        "margin",
        "-b",
        "6",
        "--labeled",
        seed,
        "--format",
        "label-studio",
        "--out",
        tmp_path / "tasks",
        "--document-root",
        root,
        "--json",
    )
    assert picked.exit_code == 0, picked.output
    summary = json.loads(picked.stdout)
    tasks = json.loads(Path(summary["files"][0]).read_text())
    assert len(tasks) == 6
    assert summary["model_version"].startswith("margin@mobilenet_v3_small")
    for task, pick in zip(tasks, summary["picks"], strict=True):
        assert task["data"]["uri"] == pick["uri"]
        assert task["data"]["image"].startswith(LOCAL_FILES_URL)
        prediction = task["predictions"][0]
        assert prediction["score"] == pytest.approx(pick["score"])
        assert prediction["result"][0]["value"]["choices"][0] in DIGITS

    project = label_studio.create_project(DIGITS)
    label_studio.link_local_files(project, pool)
    imported = label_studio.api("POST", f"/api/projects/{project}/import", tasks)
    assert imported["task_count"] == 6
    assert imported["prediction_count"] == 6
    served = label_studio.tasks(project)
    by_uri = {t["data"]["uri"]: t for t in served}
    first = served[0]
    image = label_studio.api("GET", first["data"]["image"], raw=True)
    assert image == Path(first["data"]["uri"]).read_bytes()  # Label Studio shows the pixels

    uris = [t["data"]["uri"] for t in tasks]
    wrong = "1" if truth[uris[0]] != "1" else "2"
    label_studio.annotate(by_uri[uris[0]]["id"], wrong)
    label_studio.annotate(by_uri[uris[0]]["id"], truth[uris[0]])  # the latest wins
    label_studio.annotate(by_uri[uris[1]]["id"], truth[uris[1]], cancelled=True)  # skipped
    label_studio.annotate(by_uri[uris[2]]["id"], truth[uris[2]])
    expected = {u: truth[u] for u in (uris[0], uris[2])}
    for kind, suffix in (("JSON", "json"), ("JSON_MIN", "json"), ("CSV", "csv")):
        for all_tasks in (True, False):
            data = label_studio.export(project, kind, all_tasks=all_tasks)
            path = tmp_path / f"export-{kind}-{all_tasks}.{suffix}"
            path.write_text(data if isinstance(data, str) else json.dumps(data))
            assert load_labels(path, root=str(root)) == expected, (kind, all_tasks)
    # ... and with only the image URL to go by (no data.uri), through the document root
    bare = label_studio.export(project, "JSON", all_tasks=True)
    for task in bare:
        del task["data"]["uri"]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    assert load_labels(tmp_path / "bare.json", root=str(root)) == expected
    # the next selection reads an export as its labels (explicit format)
    again = invoke(
        runner,
        "select",
        pool,
        *TINY,
        "-s",
        "margin",
        "-b",
        "3",
        "--labeled",
        tmp_path / "export-CSV-False.csv",
        "--labels-format",
        "label-studio-csv",
    )
    assert again.exit_code == 0, again.output
    assert not set(again.stdout.split()) & set(expected)
    # the directory oracle reads a JSON_MIN export saved as batch-NNN.labels.json
    inbox = DirectoryOracle(tmp_path / "inbox")
    asked = [uris[0], uris[2]]
    with pytest.raises(Exception, match="items to label"):
        inbox.label(asked)
    min_export = label_studio.export(project, "JSON_MIN", all_tasks=False)
    (tmp_path / "inbox" / "batch-001.labels.json").write_text(json.dumps(min_export))
    assert inbox.label(asked) == expected


@pytest.mark.slow
def test_live_oracle_runs_auto_to_the_end(label_studio, digits, runner, tmp_path, monkeypatch):
    pools, truth, root = digits["pools"], digits["truth"], digits["root"]
    pool = pools["train"].directory
    project = label_studio.create_project(DIGITS)
    label_studio.link_local_files(project, pool)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(root))
    oracle = f"label-studio://127.0.0.1:{label_studio.port}/{project}"
    start = [
        "auto",
        pool,
        *TINY,
        "--oracle",
        oracle,
        "--eval",
        pools["test"].labels_csv,
        "--strategies",
        "margin,entropy",
        "--initial",
        "6",
        "--round-size",
        "4",
        "--target-acc",
        "0.99",
        "--budget",
        "14",
        "--out",
        tmp_path / "run",
        "--json",
    ]
    resume = [
        "auto",
        pool,
        *TINY,
        "--oracle",
        oracle,
        "--eval",
        pools["test"].labels_csv,
        "--resume",
        tmp_path / "run",
        "--json",
    ]
    args, waits = start, 0
    for _ in range(8):
        result = invoke(runner, *args)
        assert result.exit_code == 0, result.output
        assert label_studio.token not in result.output
        doc = json.loads(result.stdout)
        if doc.get("status") != "waiting_for_labels":
            break
        waits += 1
        assert doc["project"].endswith(f"/projects/{project}/data")
        assert f"--oracle {oracle}" in doc["resume"]
        again = invoke(runner, *resume)  # nothing annotated yet: still waiting, nothing re-imported
        assert json.loads(again.stdout)["status"] == "waiting_for_labels"
        for task in label_studio.tasks(project):
            if not task["annotations"]:
                label_studio.annotate(task["id"], truth[task["data"]["uri"]])
        args = resume
    assert doc["labels_bought"] == 14
    assert waits >= 3
    served = label_studio.tasks(project)
    assert len(served) == len({t["data"]["uri"] for t in served}) == 14  # each item once
    with open(tmp_path / "run" / "labeled.csv", newline="") as f:
        bought = {row["uri"]: row["label"] for row in csv.DictReader(f)}
    assert bought == {t["data"]["uri"]: truth[t["data"]["uri"]] for t in served}


def test_live_oracle_spec_and_token_are_checked_before_embedding(
    runner, tmp_path, monkeypatch, png_pool
):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    png_pool(3)
    base = [
        "auto",
        tmp_path / "pool",
        "--eval-frac",
        "0.2",
        "--target-acc",
        "0.9",
        "--budget",
        "200",
        "--oracle",
    ]
    no_token = invoke(runner, *base, "label-studio://127.0.0.1:9/1")
    assert no_token.exit_code == 2
    assert "LABEL_STUDIO_API_KEY" in no_token.output
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-token-value")
    bad = invoke(runner, *base, "label-studio://127.0.0.1:9/")
    assert bad.exit_code == 2
    assert "PROJECT_ID" in bad.output
    down = invoke(runner, *base, f"label-studio://127.0.0.1:{_closed_port()}/1")
    assert down.exit_code == 1, down.output
    assert "cannot reach Label Studio" in down.output
    assert "secret-token-value" not in down.output + bad.output


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_select_tasks_to_stdout_cold_start_and_bad_roots(runner, tmp_path, png_pool):
    import numpy as np

    paths = png_pool(5)
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).random((5, 4), dtype=np.float32))
    (tmp_path / "uris.txt").write_text("".join(f"{p}\n" for p in paths))
    base = ["select", "--embeddings", tmp_path / "emb.npy", "--uris", tmp_path / "uris.txt"]
    base += ["-s", "coreset", "-b", "3", "--format", "label-studio"]
    no_root = invoke(runner, *base)
    assert no_root.exit_code == 2
    assert "--document-root" in no_root.output
    outside = invoke(runner, *base, "--document-root", tmp_path / "pool" / "sub")
    assert outside.exit_code == 2
    assert "outside the document root" in outside.output
    printed = invoke(runner, *base, "--document-root", tmp_path)
    assert printed.exit_code == 0, printed.output
    tasks = json.loads(printed.stdout)
    assert [t["data"]["image"] for t in tasks] == [
        f"{LOCAL_FILES_URL}pool/{Path(t['data']['uri']).name}" for t in tasks
    ]
    prediction = tasks[0]["predictions"][0]
    assert prediction["model_version"] == "coreset@own-arrays"
    assert prediction["result"] == []  # a cold start: no head, no pre-annotation
    misplaced = invoke(runner, *base[:-2], "--out", tmp_path / "t")
    assert misplaced.exit_code == 2
    assert "--format label-studio" in misplaced.output


def test_a_found_alcli_toml_cannot_send_the_token_to_its_server(runner, tmp_path, png_pool):
    png_pool(3)
    (tmp_path / "alcli.toml").write_text('[auto]\noracle = "label-studio://evil.example:80/1"\n')
    args = ["auto", tmp_path / "pool", "--eval-frac", "0.2", "--target-acc", "0.9"]
    refused = invoke(runner, *args, "--budget", "200")
    assert refused.exit_code == 2
    assert "sends the Label Studio API token" in refused.output


def test_ground_truth_then_the_latest_annotation_wins(tmp_path):
    def annotation(number: int, label: str, when: str, **flags: bool) -> dict:
        return {"id": number, "result": _choice(label), "updated_at": when, **flags}

    export = [
        {
            "id": 1,
            "data": {"uri": "/p/a.png"},
            "annotations": [
                annotation(1, "3", "2026-01-02", ground_truth=True),
                annotation(2, "5", "2026-01-03"),
            ],
        },
        {
            "id": 2,
            "data": {"uri": "/p/b.png"},
            "annotations": [
                annotation(3, "1", "2026-01-01"),
                annotation(4, "2", "2026-01-05", was_cancelled=True),
            ],
        },
        {"id": 3, "data": {"uri": "/p/c.png"}, "annotations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    assert load_labels(path) == {"/p/a.png": "3", "/p/b.png": "1"}
