"""Oracles: the labels file, a command, a folder a person works through; the CSV reader."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alcli.errors import LabelsError, OracleError
from alcli.oracle import (
    CommandOracle,
    DirectoryOracle,
    LabelsFileOracle,
    Oracle,
    PendingLabels,
    format_labels_csv,
    load_labels_csv,
)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --- load_labels_csv -----------------------------------------------------------------------


def test_load_labels_normalizes_local_paths_and_keeps_remote(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "l.csv",
        """
        uri,label
        imgs/a.png,cat
        s3://bucket/b.jpg,dog
        "imgs/with,comma.png",cat
        """,
    )
    labels = load_labels_csv(path)
    assert labels == {
        str(tmp_path / "imgs" / "a.png"): "cat",
        "s3://bucket/b.jpg": "dog",
        str(tmp_path / "imgs" / "with,comma.png"): "cat",
    }
    assert "imgs/a.png" in load_labels_csv(path, normalize_uris=False)


def test_load_labels_extra_columns_and_column_order(tmp_path) -> None:
    path = write(tmp_path / "l.csv", "label,score,uri\ncat,0.9,s3://b/a\n")
    assert load_labels_csv(path) == {"s3://b/a": "cat"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,class\ns3://b/a,cat\n", "line 1 must be a header"),
        ("", "line 1 must be a header"),
        ("uri,label\ns3://b/a,cat\ns3://b/b\n", "line 3: expected uri,label"),
        ("uri,label\ns3://b/a,\n", "line 2: no label for s3://b/a"),
        ("uri,label\n,cat\n", "line 2: empty uri"),
        ("uri,label\ns3://b/a,cat\ns3://b/a,dog\n", "line 3: s3://b/a labeled 'dog'"),
    ],
)
def test_load_labels_bad_rows_name_the_line(tmp_path, text, message) -> None:
    path = write(tmp_path / "l.csv", text)
    with pytest.raises(LabelsError, match=message):
        load_labels_csv(path)


def test_load_labels_missing_file(tmp_path) -> None:
    with pytest.raises(LabelsError, match="not found"):
        load_labels_csv(tmp_path / "nope.csv")


def test_load_labels_blank_lines_and_same_label_twice_are_fine(tmp_path) -> None:
    path = write(tmp_path / "l.csv", "uri,label\n\ns3://b/a,cat\ns3://b/a,cat\n")
    assert load_labels_csv(path) == {"s3://b/a": "cat"}


# --- LabelsFileOracle -----------------------------------------------------------------------


def test_labels_file_oracle_answers_in_the_callers_spelling(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "l.csv", "uri,label\na.png,cat\ns3://b/x.jpg,dog\n")
    oracle = LabelsFileOracle(path)
    assert isinstance(oracle, Oracle)
    absolute = str(tmp_path / "a.png")
    assert oracle.label([absolute, "s3://b/x.jpg"]) == {absolute: "cat", "s3://b/x.jpg": "dog"}
    assert oracle.label(["a.png"]) == {"a.png": "cat"}


def test_labels_file_oracle_missing_uris_are_counted_and_named(tmp_path) -> None:
    oracle = LabelsFileOracle(write(tmp_path / "l.csv", "uri,label\ns3://b/a,cat\n"))
    with pytest.raises(OracleError, match=r"no label for 2 URIs \(first: s3://b/x, s3://b/y\)"):
        oracle.label(["s3://b/a", "s3://b/x", "s3://b/y"])


# --- CommandOracle --------------------------------------------------------------------------

LOOKUP = """
import sys
labels = {"s3://b/a": "cat", "s3://b/b": "dog", "s3://b/c,d": "cow"}
print("uri,label")
for line in sys.stdin:
    uri = line.rstrip("\\n")
    if uri in labels:
        q = '"' + uri + '"' if "," in uri else uri
        print(q + "," + labels[uri])
"""


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_command_oracle_reads_uri_label_lines() -> None:
    oracle = CommandOracle(python(LOOKUP), timeout_s=30)
    assert oracle.label(["s3://b/b", "s3://b/a", "s3://b/c,d"]) == {
        "s3://b/a": "cat",
        "s3://b/b": "dog",
        "s3://b/c,d": "cow",
    }
    assert oracle.label([]) == {}


def test_command_oracle_string_is_split_without_a_shell(tmp_path) -> None:
    script = write(tmp_path / "my oracle.py", LOOKUP)
    marker = tmp_path / "marker"
    oracle = CommandOracle(f"{sys.executable} '{script}' ; touch {marker}", timeout_s=30)
    assert oracle.argv[1] == str(script)
    # ";" and "touch" reach the script as arguments; no shell runs them.
    assert oracle.label(["s3://b/a"]) == {"s3://b/a": "cat"}
    assert not marker.exists()


def test_command_oracle_missing_uri_is_an_error() -> None:
    oracle = CommandOracle(python(LOOKUP), timeout_s=30)
    with pytest.raises(OracleError, match=r"no label for 1 of 2 URIs \(first: s3://b/zzz\)"):
        oracle.label(["s3://b/a", "s3://b/zzz"])


def test_command_oracle_unknown_uri_is_an_error() -> None:
    oracle = CommandOracle(python('print("s3://b/other,cat")'), timeout_s=30)
    with pytest.raises(OracleError, match=r"answered 1 URIs it was not asked \(first: s3://b/o"):
        oracle.label(["s3://b/a"])


def test_command_oracle_bad_line_is_an_error() -> None:
    oracle = CommandOracle(python('print("just-a-uri")'), timeout_s=30)
    with pytest.raises(OracleError, match="output line 1 is not uri,label: just-a-uri"):
        oracle.label(["s3://b/a"])


def test_command_oracle_failure_reports_status_and_last_stderr_line() -> None:
    code = """
    import sys
    print("warming up", file=sys.stderr)
    print("token expired: log in again", file=sys.stderr)
    sys.exit(3)
    """
    oracle = CommandOracle(python(code), timeout_s=30)
    with pytest.raises(OracleError, match=r"exited with status 3: token expired: log in again$"):
        oracle.label(["s3://b/a"])


def test_command_oracle_timeout() -> None:
    oracle = CommandOracle(python("import time; time.sleep(30)"), timeout_s=0.5)
    with pytest.raises(OracleError, match=r"timed out after 0.5 s"):
        oracle.label(["s3://b/a"])


def test_command_oracle_program_not_found() -> None:
    oracle = CommandOracle(["/definitely/not/a/program"], timeout_s=5)
    with pytest.raises(OracleError, match="not found: /definitely/not/a/program"):
        oracle.label(["s3://b/a"])


# --- DirectoryOracle ------------------------------------------------------------------------


def test_directory_oracle_round_trip(tmp_path) -> None:
    folder = tmp_path / "labeling"
    oracle = DirectoryOracle(folder)
    uris = ["s3://b/a", "s3://b/b,c"]
    with pytest.raises(PendingLabels) as pending:
        oracle.label(uris)
    batch = folder / "batch-001.csv"
    assert pending.value.batch_path == batch
    assert pending.value.labels_path == folder / "batch-001.labels.csv"
    assert pending.value.count == 2
    with pytest.raises(LabelsError, match="no label"):  # the batch itself is not an answer
        load_labels_csv(batch)
    assert batch.read_text() == 'uri,label\ns3://b/a,\n"s3://b/b,c",\n'
    studio = json.loads((folder / "batch-001.labelstudio.json").read_text())
    assert studio == [  # data.uri: how a Label Studio export maps back to the pool
        {"data": {"image": "s3://b/a", "uri": "s3://b/a"}},
        {"data": {"image": "s3://b/b,c", "uri": "s3://b/b,c"}},
    ]

    # Asked again before anyone labeled: same batch, still pending, no new files.
    with pytest.raises(PendingLabels):
        oracle.label(list(reversed(uris)))
    assert sorted(p.name for p in folder.iterdir()) == [
        "batch-001.csv",
        "batch-001.labelstudio.json",
    ]

    write(folder / "batch-001.labels.csv", 'uri,label\n"s3://b/b,c",dog\ns3://b/a,cat\n')
    # A fresh oracle object (as after a resume) finds the answered batch.
    assert DirectoryOracle(folder).label(uris) == {"s3://b/a": "cat", "s3://b/b,c": "dog"}

    # A different request starts the next batch.
    with pytest.raises(PendingLabels) as second:
        oracle.label(["s3://b/z"])
    assert second.value.batch_path == folder / "batch-002.csv"


def test_directory_oracle_incomplete_labels_is_an_error(tmp_path) -> None:
    oracle = DirectoryOracle(tmp_path)
    with pytest.raises(PendingLabels):
        oracle.label(["s3://b/a", "s3://b/b"])
    write(tmp_path / "batch-001.labels.csv", "uri,label\ns3://b/a,cat\n")
    with pytest.raises(OracleError, match=r"no label for 1 of 2 URIs \(first: s3://b/b\)"):
        oracle.label(["s3://b/a", "s3://b/b"])


def test_directory_oracle_writes_nothing_for_an_empty_request(tmp_path) -> None:
    assert DirectoryOracle(tmp_path / "x").label([]) == {}
    assert not os.path.exists(tmp_path / "x")


def test_command_oracle_matches_answers_spelled_differently(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    oracle = CommandOracle(python('import sys; sys.stdin.read(); print("imgs/a.png,cat")'))
    asked = str(tmp_path / "imgs" / "a.png")
    assert oracle.label([asked]) == {asked: "cat"}


# --- CommandOracle: a stuck, odd or hostile command -----------------------------------------


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_command_oracle_timeout_kills_the_whole_process_group(tmp_path) -> None:
    """A shell script's child (here a sleep) holds the pipes; it must die with the script."""
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 120 & echo $! > {pidfile}; wait"
    oracle = CommandOracle(["sh", "-c", script], timeout_s=3)
    started = time.monotonic()
    try:
        with pytest.raises(OracleError, match=r"timed out after 3 s"):
            oracle.label(["s3://b/a"])
        elapsed = time.monotonic() - started
        assert pidfile.exists(), "the shell did not start its child within the timeout"
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 30
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), "the grandchild sleep outlived the timed-out oracle command"
        assert elapsed < 60  # not held until the sleep ends
    finally:
        if pidfile.exists() and not _gone(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_command_oracle_output_that_is_not_utf8_is_an_oracle_error() -> None:
    code = r'import sys; sys.stdin.read(); sys.stdout.buffer.write(b"s3://b/a,caf\xe9\n")'
    oracle = CommandOracle(python(code), timeout_s=30)
    with pytest.raises(OracleError, match=r"output line 1 is not UTF-8 text \(byte 0xe9\)"):
        oracle.label(["s3://b/a"])


def test_command_oracle_names_that_are_not_utf8_go_through_as_bytes() -> None:
    """A pool name that is not UTF-8 (kept with surrogateescape) is sent as its own bytes."""
    code = r"""
    import sys
    for line in sys.stdin.buffer:
        sys.stdout.buffer.write(line.rstrip(b"\n") + b",cat\n")
    """
    odd = "/pool/caf\udce9.png"
    assert CommandOracle(python(code), timeout_s=30).label([odd, "/pool/b.png"]) == {
        odd: "cat",
        "/pool/b.png": "cat",
    }
    bad_label = r"""
    import sys
    for line in sys.stdin.buffer:
        sys.stdout.buffer.write(line.rstrip(b"\n") + b",\xff\n")
    """
    with pytest.raises(OracleError, match="is not UTF-8 text"):
        CommandOracle(python(bad_label), timeout_s=30).label([odd])


def test_command_oracle_two_labels_for_one_uri_is_an_error() -> None:
    twice = 'import sys; sys.stdin.read(); print("s3://b/a,cat"); print("s3://b/a,dog")'
    with pytest.raises(OracleError, match=r"labeled 's3://b/a' twice, 'cat' and 'dog'"):
        CommandOracle(python(twice), timeout_s=30).label(["s3://b/a"])
    same = 'import sys; sys.stdin.read(); print("s3://b/a,cat"); print("s3://b/a, cat")'
    assert CommandOracle(python(same), timeout_s=30).label(["s3://b/a"]) == {"s3://b/a": "cat"}


def test_command_oracle_is_never_sent_a_uri_with_a_line_break(tmp_path) -> None:
    """One URI per line: a name holding a line break would reach the command as two."""
    marker = tmp_path / "ran"
    oracle = CommandOracle(["touch", str(marker)], timeout_s=30)
    for name in ("s3://b/a.png\ns3://b/forged.png", "s3://b/a\r.png", "s3://b/a\u2028.png"):
        with pytest.raises(OracleError, match="line break") as caught:
            oracle.label(["s3://b/ok.png", name])
        assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_directory_oracle_one_item_labeled_twice_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    oracle = DirectoryOracle(tmp_path / "inbox")
    asked = str(tmp_path / "a.png")
    with pytest.raises(PendingLabels) as pending:
        oracle.label([asked])
    write(pending.value.labels_path, f"uri,label\na.png,cat\n{asked},dog\n")
    with pytest.raises(LabelsError, match=r"labels '.*a\.png' twice, 'dog' and 'cat'"):
        oracle.label([asked])


def test_labels_csv_quotes_every_line_break(tmp_path) -> None:
    """The csv module leaves a lone CR bare; a reader would split the row there."""
    labels = {"s3://b/a\r.png": "cat", "s3://b/b\x0c.png": "dog", 's3://b/"c",d': "cow"}
    text = format_labels_csv(labels)
    assert text.count("\n") == 4
    path = tmp_path / "l.csv"
    path.write_text(text, newline="")
    assert load_labels_csv(path, normalize_uris=False) == labels
