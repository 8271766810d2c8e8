"""A bad pool item is one skipped item, never a failed run: every command on a messy pool.

The pool is real: dangling and looping symlinks, a corrupt PNG, a file whose name is not
UTF-8, manifests naming missing files or holding an unquoted comma, an S3 object deleted
after the manifest was written. Exit codes and the bytes printed come from real
subprocesses; the rest goes through Typer's runner.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from alcli.cli import app
from helpers import png_bytes, write_corrupt_png, write_pngs

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
LOOP = f"unreadable: {os.strerror(errno.ELOOP)}"
#: A name that is not UTF-8, as Python gives it (PEP 383): the byte 0xff as a surrogate.
ODD_NAME = os.fsdecode(b"odd-\xff.png")


def messy_pool(root: Path, good: int = 10) -> dict[str, Any]:
    """``good`` PNGs plus one of each bad kind, and the PNG with a non-UTF-8 name."""
    paths = [str(p) for p in write_pngs(root, good)]
    odd = root / ODD_NAME
    odd.write_bytes(png_bytes(np.random.default_rng(99)))
    (root / "dangling.png").symlink_to("nowhere.png")
    (root / "loop-a.png").symlink_to("loop-b.png")
    (root / "loop-b.png").symlink_to("loop-a.png")
    write_corrupt_png(root / "corrupt.png")
    return {
        "good": sorted([*paths, str(odd)]),
        "odd": str(odd),
        "bad": {
            str(root / "dangling.png"): "not found (dangling symlink)",
            str(root / "loop-a.png"): LOOP,
            str(root / "loop-b.png"): LOOP,
            str(root / "corrupt.png"): "corrupt image",
        },
    }


def alcli(
    *args: str | Path, cache: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """A real ``python -m alcli`` process; stdout and stderr as bytes."""
    env = {**os.environ, "ALCLI_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "alcli", *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=600,
        check=False,
    )


def reasons(failures: list[dict[str, str]]) -> dict[str, str]:
    return {f["uri"]: f["reason"] for f in failures}


def assert_bad_reported(found: dict[str, str], bad: dict[str, str]) -> None:
    assert set(found) == set(bad)
    for uri, reason in bad.items():
        assert found[uri].startswith(reason), (uri, found[uri])


def labels_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A ``uri,label`` CSV whose names are written as their own bytes (as ``find`` would)."""
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        csv.writer(f).writerows([("uri", "label"), *rows])
    return path


@pytest.mark.slow
def test_embed_and_select_on_a_messy_folder_skip_bad_items(tmp_path: Path) -> None:
    pool = messy_pool(tmp_path / "pool")
    cache = tmp_path / "cache"
    embedded = alcli("embed", tmp_path / "pool", *TINY, "--json", cache=cache)
    assert embedded.returncode == 0, embedded.stderr.decode(errors="replace")
    summary = json.loads(embedded.stdout)
    assert (summary["items"], summary["embedded"], summary["failed"]) == (15, 11, 4)
    assert_bad_reported(reasons(summary["failures"]), pool["bad"])
    stderr = embedded.stderr.decode(errors="surrogateescape")
    assert f"skipped {tmp_path / 'pool' / 'dangling.png'}: not found" in stderr
    assert "internal error" not in stderr

    # The odd name comes out as its own bytes; labels naming it (raw bytes in the file) match.
    # The corrupt image was labeled: left out with one warning, not a failed selection.
    labeled = [
        (pool["good"][0], "a"),
        (pool["odd"], "b"),
        (str(tmp_path / "pool/corrupt.png"), "a"),
    ]
    labels = labels_file(tmp_path / "labels.csv", labeled)
    assert os.fsencode(pool["odd"]) in labels.read_bytes()
    picked = alcli(
        "select", tmp_path / "pool", *TINY, "-s", "random", "-b", "9", "-l", labels, cache=cache
    )
    assert picked.returncode == 0, picked.stderr.decode(errors="replace")
    warnings = [line for line in picked.stderr.splitlines() if b"labeled items" in line]
    assert warnings == [
        b"alcli: warning: 1 labeled items were skipped and are left out (e.g. "
        + os.fsencode(str(tmp_path / "pool/corrupt.png"))
        + b": corrupt image: "
        + warnings[0].split(b": corrupt image: ", 1)[1]
    ]
    unlabeled = {os.fsencode(uri) for uri in pool["good"][1:] if uri != pool["odd"]}
    assert set(picked.stdout.splitlines()) == unlabeled

    everything = alcli("select", tmp_path / "pool", *TINY, "-s", "random", "-b", "11", cache=cache)
    assert everything.returncode == 0, everything.stderr.decode(errors="replace")
    assert sorted(everything.stdout.splitlines()) == sorted(map(os.fsencode, pool["good"]))


@pytest.mark.slow
def test_auto_runs_on_a_messy_folder(tmp_path: Path) -> None:
    pool = messy_pool(tmp_path / "pool", good=19)
    truth = [(uri, "ab"[i % 2]) for i, uri in enumerate(pool["good"])]
    oracle = labels_file(tmp_path / "oracle.csv", truth)
    done = alcli(
        "auto", tmp_path / "pool", *TINY, "--oracle", oracle, "--target-acc", "0.99",
        "--budget", "8", "--initial", "4", "--eval-frac", "0.25", "--out", tmp_path / "run",
        "--json", cache=tmp_path / "cache",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert json.loads(done.stdout)["labels_bought"] <= 8
    with open(tmp_path / "run/labeled.csv", newline="", errors="surrogateescape") as f:
        bought = [row["uri"] for row in csv.DictReader(f)]
    assert bought
    assert set(bought) <= set(pool["good"])


@pytest.mark.slow
def test_bench_on_a_messy_pool_from_stdin(tmp_path: Path) -> None:
    """Names on stdin as raw bytes (``find ... | alcli bench -``), the odd one included."""
    pool = messy_pool(tmp_path / "pool", good=4)
    listing = b"".join(os.fsencode(uri) + b"\n" for uri in [*pool["good"], *pool["bad"]])
    done = alcli(
        "bench", "-", *TINY, "--no-strategies", "--batch-size", "4", "--json",
        cache=tmp_path / "cache", stdin=listing,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert report["failed"] == len(pool["bad"])
    assert_bad_reported(reasons(report["failures"]), pool["bad"])


def invoke(runner: CliRunner, *args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_manifest_naming_a_missing_file_skips_it(runner: CliRunner, tmp_path: Path) -> None:
    write_pngs(tmp_path / "pool", 3)
    manifest = tmp_path / "pool" / "list.txt"
    manifest.write_text("img00000.png\nmissing.png\nimg00001.png\n")
    result = invoke(runner, "embed", manifest, *TINY, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["items"], summary["embedded"]) == (3, 2)
    assert reasons(summary["failures"]) == {str(tmp_path / "pool/missing.png"): "not found"}
    assert f"skipped {tmp_path / 'pool/missing.png'}: not found" in result.stderr


def test_csv_row_with_an_unquoted_comma_is_one_skipped_item(
    runner: CliRunner, tmp_path: Path
) -> None:
    write_pngs(tmp_path / "pool", 2)
    (tmp_path / "pool/a,b.png").write_bytes(png_bytes(np.random.default_rng(5)))
    manifest = tmp_path / "pool" / "list.csv"
    manifest.write_text("uri\nimg00000.png\na,b.png\nimg00001.png\n")
    result = invoke(runner, "embed", manifest, *TINY, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["items"], summary["embedded"]) == (3, 2)  # the file exists: no guessing
    [failure] = summary["failures"]
    assert failure["uri"] == str(tmp_path / "pool/a,b.png")
    assert failure["reason"] == (
        f"bad manifest row {manifest}:3: 2 fields for 1 columns (quote a URI that holds a comma)"
    )


def test_select_leaves_out_a_labeled_item_that_was_skipped(
    runner: CliRunner, tmp_path: Path
) -> None:
    paths = write_pngs(tmp_path / "pool", 6)
    corrupt = write_corrupt_png(tmp_path / "pool" / "zz-corrupt.png")
    labels = labels_file(
        tmp_path / "labels.csv", [(str(paths[0]), "a"), (str(paths[1]), "b"), (str(corrupt), "a")]
    )
    result = invoke(runner, "select", tmp_path / "pool", *TINY, "-s", "margin", "-b", "2",
                    "-l", labels, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.count("labeled items were skipped") == 1
    assert f"1 labeled items were skipped and are left out (e.g. {corrupt}: corrupt" in (
        result.stderr
    )
    summary = json.loads(result.stdout)
    assert (summary["labeled"], summary["labeled_skipped"], summary["picked"]) == (2, 1, 2)

    # A label that names no pool item at all is still a typo worth stopping for.
    wrong = labels_file(tmp_path / "wrong.csv", [(str(corrupt), "a"), ("elsewhere.png", "b")])
    typo = invoke(runner, "select", tmp_path / "pool", *TINY, "-s", "margin", "-b", "2",
                  "-l", wrong)  # fmt: skip
    assert typo.exit_code == 2
    assert "1 labeled URIs are not in the pool" in typo.stderr
    assert "elsewhere.png" in typo.stderr


@pytest.mark.s3
def test_s3_manifest_naming_a_deleted_object_skips_it(
    runner: CliRunner, s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for index, data in enumerate(png_bytes(np.random.default_rng(i)) for i in range(3)):
        fs.pipe_file(f"{bucket}/imgs/{index}.png", data)
    uris = [f"s3://{bucket}/imgs/{index}.png" for index in range(3)]
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join(uris) + "\n")
    fs.rm_file(f"{bucket}/imgs/1.png")  # deleted after the manifest was written
    endpoint = options["client_kwargs"]["endpoint_url"]
    args = ["embed", manifest, *TINY, "--endpoint-url", endpoint, "--json"]
    for _ in range(2):  # cold, then warm: the deleted object is skipped both times
        result = invoke(runner, *args)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert (summary["items"], summary["failed"]) == (3, 1)
        assert reasons(summary["failures"]) == {uris[1]: "not found"}
    assert summary["cached"] == 2


def test_embed_json_escapes_a_non_utf8_name_and_it_reads_back(
    runner: CliRunner, tmp_path: Path
) -> None:
    """``--json`` writes the name as ``\\udcff``, which ``json.loads`` turns back into it."""
    write_pngs(tmp_path / "pool", 2)
    (tmp_path / "pool" / ODD_NAME).symlink_to("nowhere.png")
    result = invoke(runner, "embed", tmp_path / "pool", *TINY, "--json")
    assert result.exit_code == 0, result.output
    assert "\\udcff" in result.stdout
    [failure] = json.loads(result.stdout)["failures"]
    assert os.fsencode(failure["uri"]) == os.fsencode(str(tmp_path / "pool")) + b"/odd-\xff.png"
    assert failure["reason"] == "not found (dangling symlink)"


def test_unlistable_subfolder_is_reported_and_the_rest_is_embedded(
    runner: CliRunner, tmp_path: Path
) -> None:
    write_pngs(tmp_path / "pool", 2)
    too_deep = _folders_past_path_max(tmp_path / "pool")
    result = invoke(runner, "embed", tmp_path / "pool", *TINY, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 2
    [ignored] = summary["ignored"]
    assert ignored.startswith(too_deep[:200])
    assert ignored.endswith(f"cannot list: {os.strerror(errno.ENAMETOOLONG)}")
    assert "1 entries ignored" in result.stderr


def _folders_past_path_max(root: Path) -> str:
    """Nested folders (made relative to open folder handles) whose path passes PATH_MAX, so
    listing the deepest one fails with ENAMETOOLONG; returns the path of the first such."""
    name = "d" * 250
    depth = 4200 // (len(name) + 1) + 1
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    path = str(root)
    first_too_long = ""
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            path = f"{path}/{name}"
            if not first_too_long and len(os.fsencode(path)) >= 4096:
                first_too_long = path
    finally:
        os.close(fd)
    assert first_too_long
    return first_too_long


def test_a_pool_built_by_hand_with_unreadable_keys_does_not_fail(tmp_path: Path) -> None:
    """A Pool assembled from another pool's items (as bench does) carries no reasons."""
    from alcli.embedding import EmbedOptions, embed
    from alcli.sources import Pool, resolve_pool

    write_pngs(tmp_path / "pool", 2)
    (tmp_path / "pool" / "gone.png").symlink_to("nowhere.png")
    full = resolve_pool(str(tmp_path / "pool"))
    bare = Pool(spec="by hand", items=list(full.items))
    options = EmbedOptions(model="mobilenet_v3_small", weights="none", image_size=32)
    result = embed(bare, options=options, cache=tmp_path / "cache")
    assert [(f.index, f.uri, f.reason) for f in result.failures] == [
        (0, str(tmp_path / "pool/gone.png"), "unreadable")
    ]
    assert result.uris == [str(p) for p in sorted((tmp_path / "pool").glob("img*.png"))]


def test_labels_with_raw_non_utf8_bytes_load_as_the_pool_names(tmp_path: Path) -> None:
    from alcli.oracle import load_labels_csv

    raw = io.BytesIO()
    raw.write(b"uri,label\n" + os.fsencode(str(tmp_path / ODD_NAME)) + b",cat\n")
    (tmp_path / "labels.csv").write_bytes(raw.getvalue())
    assert load_labels_csv(tmp_path / "labels.csv") == {str(tmp_path / ODD_NAME): "cat"}


@pytest.mark.s3
def test_s3_object_deleted_after_listing_is_one_skipped_item(
    s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    import fsspec

    from alcli.embedding import EmbedOptions, embed
    from alcli.sources import resolve_pool

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for index in range(3):
        fs.pipe_file(f"{bucket}/imgs/{index}.png", png_bytes(np.random.default_rng(index)))
    pool = resolve_pool(f"s3://{bucket}/imgs/", storage_options=options)
    fs.rm_file(f"{bucket}/imgs/2.png")  # gone between the listing and the read
    options_ = EmbedOptions(model="mobilenet_v3_small", weights="none", image_size=32)
    result = embed(pool, options=options_, cache=tmp_path / "cache")
    assert [(f.index, f.uri, f.reason) for f in result.failures] == [
        (2, f"s3://{bucket}/imgs/2.png", "not found")
    ]
    assert result.embedded == 2
