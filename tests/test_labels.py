"""alcli.labels: URI lists read like manifests and labels files, old import paths, writes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from alcli.errors import LabelsError
from alcli.labels import (
    format_labels_csv,
    load_labels_csv,
    match_labels,
    read_uri_list,
    write_atomic,
)
from alcli.sources import resolve_pool

ODD = os.fsdecode(b"odd-\xff.png")


def test_uri_list_reads_a_csv_header_as_manifests_and_labels_files_do(
    tmp_path: Path, monkeypatch
) -> None:
    """One CSV reader: a header spelled ' URI ' (or with Excel's BOM) and a row of spaces
    mean the same in an --exclude list as in a manifest and a labels file."""
    text = "\ufeff URI ,note\n a.png ,x\n   ,  \n#skipped,y\nb.png\n"
    (tmp_path / "exclude.csv").write_text(text, encoding="utf-8")
    (tmp_path / "manifest.csv").write_text(text, encoding="utf-8")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    expected = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    monkeypatch.chdir(tmp_path)
    assert read_uri_list("exclude.csv") == expected
    pool = resolve_pool(str(tmp_path / "manifest.csv"))
    assert [item.uri for item in pool.items if not item.unreadable] == expected


def test_uri_list_text_with_a_bom_names_the_first_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "uris.txt").write_text("\ufeffa.png\n\n# note\ns3://b/k.png\n", encoding="utf-8")
    assert read_uri_list("uris.txt") == [str(tmp_path / "a.png"), "s3://b/k.png"]


def test_uri_list_csv_without_a_uri_column_is_a_labels_error(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("path\na.png\n")
    with pytest.raises(LabelsError, match="a CSV here needs a 'uri' column"):
        read_uri_list(str(tmp_path / "x.csv"))


def test_uri_list_keeps_non_utf8_names_as_the_pool_spells_them(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(b"uri\n" + os.fsencode(str(tmp_path / ODD)) + b"\n")
    (tmp_path / "x.txt").write_bytes(os.fsencode(str(tmp_path / ODD)) + b"\n")
    assert read_uri_list(str(tmp_path / "x.csv")) == [str(tmp_path / ODD)]
    assert read_uri_list(str(tmp_path / "x.txt")) == [str(tmp_path / ODD)]


def test_labels_round_trip_through_an_atomic_write(tmp_path: Path) -> None:
    labels = {"s3://b/a,1.png": "cat", str(tmp_path / ODD): 'say "hi"', "s3://b/c": "dog"}
    path = tmp_path / "labels.csv"
    write_atomic(path, format_labels_csv(labels))
    assert load_labels_csv(path, normalize_uris=False) == labels
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]  # no temp file left


def test_match_labels_in_pool_order_and_names_what_is_missing() -> None:
    rows, values = match_labels(["u0", "u1", "u2"], {"u2": "b", "u0": "a"})
    assert rows.tolist() == [0, 2]
    assert values == ["a", "b"]
    with pytest.raises(LabelsError, match="1 excluded URIs are not in the pool"):
        match_labels(["u0"], {"zz": ""}, what="excluded")


def test_old_import_paths_still_give_the_same_functions() -> None:
    import alcli.labels
    import alcli.oracle
    import alcli.selection

    assert alcli.oracle.load_labels_csv is alcli.labels.load_labels_csv
    assert alcli.oracle.write_atomic is alcli.labels.write_atomic
    assert alcli.oracle.format_labels_csv is alcli.labels.format_labels_csv
    assert alcli.selection.match_labels is alcli.labels.match_labels
    assert alcli.selection.read_uri_list is alcli.labels.read_uri_list


def test_selection_picks_is_now_selection_and_says_so() -> None:
    import alcli.selection
    import alcli.strategies

    with pytest.warns(DeprecationWarning, match=r"Picks is now alcli\.selection\.Selection"):
        old = alcli.selection.Picks
    assert old is alcli.selection.Selection
    assert alcli.strategies.Picks is not alcli.selection.Selection
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from alcli.selection import Selection, pick  # noqa: F401 - no warning without Picks
    with pytest.raises(AttributeError):
        _ = alcli.selection.NoSuchName
