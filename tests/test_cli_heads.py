"""`--head` for `alcli select` and `alcli auto`, on the command line and in alcli.toml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alcli.cli import app
from alcli.learner import HEAD_KINDS


def arrays(tmp_path: Path) -> tuple[Path, Path]:
    """300 rows of clustered 16-d embeddings (indices as names) and 30 labels."""
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    X = (rng.normal(size=(3, 16)) * 3)[y] + rng.normal(size=(300, 16))
    emb = tmp_path / "emb.npy"
    np.save(emb, X.astype(np.float32))
    labels = tmp_path / "labels.csv"
    labels.write_text("uri,label\n" + "".join(f"{i},{y[i]}\n" for i in range(30)))
    return emb, labels


@pytest.mark.parametrize("head", HEAD_KINDS)
def test_select_with_each_head_is_deterministic(runner, tmp_path, head) -> None:
    emb, labels = arrays(tmp_path)
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "bald", "-b", "8"]
    first = runner.invoke(app, [*args, "--head", head, "--json"])
    assert first.exit_code == 0, first.output
    picks = [p["uri"] for p in json.loads(first.stdout)["picks"]]
    assert len(set(picks)) == 8
    assert not {str(i) for i in range(30)} & set(picks)
    again = runner.invoke(app, [*args, "--head", head, "--json"])
    assert [p["uri"] for p in json.loads(again.stdout)["picks"]] == picks


def test_unknown_head_is_a_usage_error(runner, tmp_path) -> None:
    emb, labels = arrays(tmp_path)
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "margin", "-b", "3"]
    result = runner.invoke(app, [*args, "--head", "resnet"])
    assert result.exit_code == 2
    assert "unknown head" in result.output


def test_head_from_alcli_toml(runner, tmp_path, monkeypatch) -> None:
    emb, labels = arrays(tmp_path)
    (tmp_path / "alcli.toml").write_text('[select]\nhead = "nonsense"\n')
    monkeypatch.chdir(tmp_path)
    args = ["select", "--embeddings", str(emb), "-l", str(labels), "-s", "margin", "-b", "3"]
    assert runner.invoke(app, args).exit_code == 2  # the file's head is read (and checked)
    (tmp_path / "alcli.toml").write_text('[select]\nhead = "graph"\n')
    assert runner.invoke(app, args).exit_code == 0
