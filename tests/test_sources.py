"""alcli.sources: every POOL form, ordering, duplicates, keys, content hashing, reads, errors."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from alcli.errors import ItemError, PoolError
from alcli.sources import (
    UNREADABLE_KEY_PREFIX,
    Item,
    normalize_uri,
    resolve_pool,
    s3_options,
)
from helpers import png_blobs, write_broken_images

PngPool = Callable[..., list[Path]]


def uris_of(paths: list[Path]) -> list[str]:
    return [os.path.abspath(path) for path in paths]


def keys_by_uri(items: list[Item]) -> dict[str, str]:
    return {item.uri: item.key for item in items}


# --- local directories and globs ----------------------------------------------------------


def test_directory_lists_images_recursively_sorted_by_uri(tmp_path: Path, png_pool: PngPool):
    images = png_pool(6, nested=True)
    root = tmp_path / "pool"
    upper = root / "UPPER.PNG"
    mixed = root / "a" / "mixed.JpEg"
    upper.write_bytes(images[0].read_bytes())
    mixed.write_bytes(images[1].read_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / "._shadow.jpg").write_bytes(b"macOS resource fork")
    (root / ".cache").mkdir()
    (root / ".cache" / "thumb.png").write_bytes(images[2].read_bytes())

    pool = resolve_pool(str(root))

    assert pool.uris == sorted(uris_of([*images, upper, mixed]))
    assert pool.duplicates == []
    assert all(len(item.key) == 32 and not item.unreadable for item in pool.items)


def test_directory_keeps_symlink_uris_and_keys_them_by_target(tmp_path: Path, png_pool: PngPool):
    (target,) = png_pool(1, subdir="store")
    root = tmp_path / "pool"
    root.mkdir()
    link = root / "link.png"
    link.symlink_to(target)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a cycle must not recurse

    pool = resolve_pool(str(root))
    direct = resolve_pool(str(target))

    assert pool.uris == [str(link)]
    assert pool.items[0].key == direct.items[0].key


def test_relative_directory_and_glob_resolve_against_cwd(
    tmp_path: Path, png_pool: PngPool, monkeypatch: pytest.MonkeyPatch
):
    images = png_pool(6, nested=True)
    (tmp_path / "pool" / "a" / "skip.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)

    listed = resolve_pool("pool")
    globbed = resolve_pool("pool/**/*.png")  # ** also matches no folder at all

    assert globbed.uris == uris_of(images)
    assert keys_by_uri(globbed.items).items() <= keys_by_uri(listed.items).items()


def test_glob_takes_any_extension_but_only_files(tmp_path: Path, png_pool: PngPool):
    png_pool(2)
    (tmp_path / "pool" / "notes.txt").write_text("x")
    (tmp_path / "pool" / "sub.d").mkdir()

    pool = resolve_pool(str(tmp_path / "pool" / "*"))

    assert [Path(uri).name for uri in pool.uris] == ["img00000.png", "img00001.png", "notes.txt"]


def test_single_image_file(png_pool: PngPool):
    (image,) = png_pool(1)
    pool = resolve_pool(str(image))
    assert pool.uris == [str(image)]


# --- manifests and stdin ------------------------------------------------------------------


def test_txt_manifest_keeps_file_order_and_resolves_against_its_folder(
    tmp_path: Path, png_pool: PngPool, monkeypatch: pytest.MonkeyPatch
):
    images = png_pool(3)
    manifest = tmp_path / "lists" / "pool.txt"
    manifest.parent.mkdir()
    manifest.write_text(
        "# picked by hand\n"
        f"../pool/{images[2].name}\n"
        "\n"
        f"   {images[0]}   \n"
        f"../pool/{images[1].name}\n"
        f"{images[2]}\n"  # the same file again, spelled absolutely
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    pool = resolve_pool("../lists/pool.txt")

    assert pool.uris == uris_of([images[2], images[0], images[1]])
    assert pool.duplicates == [os.path.abspath(images[2])]
    assert pool.skipped == []


def test_csv_manifest_reads_the_uri_column_and_skips_bad_rows(tmp_path: Path, png_pool: PngPool):
    images = png_pool(2)
    manifest = tmp_path / "pool.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", " URI ", "note"])
        writer.writerow(["cat", images[1], "first"])
        writer.writerow(["dog", "", "no uri here"])
        writer.writerow(["cat", "ftpx://nowhere/x.png", "unknown protocol"])
        writer.writerow(["dog", f"pool/{images[0].name}", "relative"])

    pool = resolve_pool(str(manifest))

    assert pool.uris == uris_of([images[1], images[0]])
    assert pool.skipped[0] == f"{manifest}:3: no uri"
    assert pool.skipped[1].startswith(f"{manifest}:4: unknown protocol 'ftpx://'")
    assert len(pool.skipped) == 2


def test_jsonl_manifest_skips_lines_that_are_not_uri_objects(tmp_path: Path, png_pool: PngPool):
    images = png_pool(2)
    manifest = tmp_path / "pool.jsonl"
    lines = [
        json.dumps({"uri": str(images[0]), "label": 3}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"path": "no uri key"}),
        "",
        json.dumps({"uri": f"pool/{images[1].name}"}),
    ]
    manifest.write_text("\n".join(lines) + "\n")

    pool = resolve_pool(str(manifest))

    assert pool.uris == uris_of(images)
    assert pool.skipped == [
        f"{manifest}:2: not JSON",
        f"{manifest}:3: not a JSON object",
        f"{manifest}:4: no uri",
    ]


def test_manifest_entry_for_a_missing_file_stays_listed_as_unreadable(
    tmp_path: Path, png_pool: PngPool
):
    (image,) = png_pool(1)
    manifest = tmp_path / "pool.txt"
    manifest.write_text(f"{image}\nmissing.png\npool\n")

    pool = resolve_pool(str(manifest))

    assert [item.unreadable for item in pool.items] == [False, True, True]
    assert pool.items[1].key.startswith(UNREADABLE_KEY_PREFIX)
    with pytest.raises(ItemError) as missing:
        pool.read(pool.uris[1])
    assert missing.value.reason == "not found"


def test_stdin_lists_uris_in_order_relative_to_cwd(
    tmp_path: Path, png_pool: PngPool, monkeypatch: pytest.MonkeyPatch
):
    images = png_pool(3)
    monkeypatch.chdir(tmp_path)
    stdin = io.StringIO(f"pool/{images[1].name}\n# comment\n\n{images[0]}\npool/{images[1].name}\n")

    pool = resolve_pool("-", stdin=stdin)

    assert pool.uris == uris_of([images[1], images[0]])
    assert pool.duplicates == [os.path.abspath(images[1])]


# --- keys ---------------------------------------------------------------------------------


def test_keys_are_stable_and_the_same_from_directory_glob_manifest_and_stdin(
    tmp_path: Path, png_pool: PngPool
):
    images = png_pool(4, nested=True)
    manifest = tmp_path / "pool.csv"
    manifest.write_text("uri\n" + "".join(f"{path}\n" for path in reversed(images)))

    listed = keys_by_uri(resolve_pool(str(tmp_path / "pool")).items)
    again = keys_by_uri(resolve_pool(str(tmp_path / "pool")).items)
    globbed = keys_by_uri(resolve_pool(str(tmp_path / "pool" / "**" / "*.png")).items)
    from_manifest = keys_by_uri(resolve_pool(str(manifest)).items)
    from_stdin = keys_by_uri(resolve_pool("-", stdin=[f"{p}\n" for p in images]).items)

    assert len(set(listed.values())) == 4
    assert listed == again == globbed == from_manifest == from_stdin


def test_key_changes_when_mtime_or_size_changes(png_pool: PngPool):
    (image,) = png_pool(1)
    stat = image.stat()

    def key() -> str:
        return resolve_pool(str(image)).items[0].key

    original = key()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = key()
    image.write_bytes(image.read_bytes() + b"\0")
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same mtime, new size
    grown = key()

    assert len({original, touched, grown}) == 3


def test_content_hash_keys_on_bytes_and_marks_unreadable_items(tmp_path: Path, png_pool: PngPool):
    images = png_pool(2)
    copy = tmp_path / "copy.png"
    copy.write_bytes(images[0].read_bytes())
    broken = write_broken_images(tmp_path / "broken")
    manifest = tmp_path / "pool.txt"
    entries = [*images, copy, broken["empty"], broken["corrupt"], tmp_path / "gone.png"]
    manifest.write_text("".join(f"{path}\n" for path in entries))

    hashed = resolve_pool(str(manifest), content_hash=True)
    os.utime(images[0], ns=(0, 123_456_789))  # metadata changes do not move a content key
    rehashed = resolve_pool(str(manifest), content_hash=True)
    by_metadata = resolve_pool(str(manifest))

    keys = [item.key for item in hashed.items]
    assert hashed.uris == uris_of(entries)
    assert keys[0] == keys[2] != keys[1]  # same bytes, same key, wherever they live
    assert keys[4] not in (keys[0], keys[1])  # corrupt but readable: keyed on its bytes
    assert [item.unreadable for item in hashed.items] == [False] * 3 + [True, False, True]
    assert keys == [item.key for item in rehashed.items]
    assert not set(keys[:3]) & {item.key for item in by_metadata.items}


# --- reading ------------------------------------------------------------------------------


def test_read_returns_bytes_and_raises_item_errors(tmp_path: Path, png_pool: PngPool):
    (image,) = png_pool(1)
    broken = write_broken_images(tmp_path / "broken")
    pool = resolve_pool(str(image))

    assert pool.read(str(image)) == image.read_bytes()
    assert pool.read(str(broken["text"])) == broken["text"].read_bytes()  # decoding is not ours
    reasons = {}
    for name, uri in [
        ("missing", str(tmp_path / "nope.png")),
        ("empty", str(broken["empty"])),
        ("directory", str(tmp_path)),
    ]:
        with pytest.raises(ItemError) as failure:
            pool.read(uri)
        reasons[name] = failure.value.reason
    assert reasons == {
        "missing": "not found",
        "empty": "empty file",
        "directory": "unreadable: is a directory",
    }


# --- errors for a whole spec --------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "POOL is empty"),
        ("{tmp}/nowhere", "no such file or directory: {tmp}/nowhere"),
        ("{tmp}/empty", "no images found under {tmp}/empty (looked for .png, .jpg, .jpeg"),
        ("{tmp}/empty/**/*.png", "no files match {tmp}/empty/**/*.png"),
        ("{tmp}/notes.dat", "{tmp}/notes.dat is neither an image (.png"),
        (
            "{tmp}/no-uri.csv",
            "manifest {tmp}/no-uri.csv has no 'uri' column (columns: path, label)",
        ),
        ("{tmp}/blank.csv", "manifest {tmp}/blank.csv is empty"),
        ("{tmp}/comments.txt", "manifest {tmp}/comments.txt lists no usable URI"),
        ("{tmp}/bad.jsonl", "manifest {tmp}/bad.jsonl lists no usable URI; first problem: "),
        ("ftpx://bucket/images/", "cannot resolve POOL ftpx://bucket/images/: unknown protocol"),
    ],
)
def test_bad_specs_raise_one_line_pool_errors(tmp_path: Path, spec: str, message: str):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    (tmp_path / "notes.dat").write_text("x")
    (tmp_path / "no-uri.csv").write_text("path,label\na.png,1\n")
    (tmp_path / "blank.csv").write_text("")
    (tmp_path / "comments.txt").write_text("# nothing\n\n")
    (tmp_path / "bad.jsonl").write_text("{oops\n")

    with pytest.raises(PoolError) as error:
        resolve_pool(spec.format(tmp=tmp_path))

    text = str(error.value)
    assert text.startswith(message.format(tmp=tmp_path))
    assert "\n" not in text
    assert error.value.exit_code == 2


def test_empty_stdin_is_a_pool_error():
    with pytest.raises(PoolError, match="no URIs on stdin"):
        resolve_pool("-", stdin=io.StringIO("\n# only a comment\n"))


# --- normalize_uri ------------------------------------------------------------------------


def test_normalize_uri_matches_pool_uris(
    tmp_path: Path, png_pool: PngPool, monkeypatch: pytest.MonkeyPatch
):
    images = png_pool(1)
    monkeypatch.chdir(tmp_path)
    pool = resolve_pool("pool")

    assert normalize_uri(f"pool/{images[0].name}") == pool.uris[0]
    assert normalize_uri(f"./pool/../pool/{images[0].name}") == pool.uris[0]
    assert normalize_uri(f"file://{images[0]}") == pool.uris[0]
    assert normalize_uri(images[0].name, base=str(tmp_path / "pool")) == pool.uris[0]
    assert normalize_uri("s3a://bucket/a/b.png") == "s3://bucket/a/b.png"
    assert normalize_uri("x/b.png", base="s3://bucket/a") == "s3://bucket/a/x/b.png"
    assert normalize_uri("memory://m/a.png") == "memory:///m/a.png"
    with pytest.raises(PoolError, match="unknown protocol 'ftpx://'"):
        normalize_uri("ftpx://x/y.png")


def test_s3_options_builds_what_s3fs_takes():
    assert s3_options() == {}
    assert s3_options(endpoint_url="http://h:9000", profile="p", anon=True) == {
        "client_kwargs": {"endpoint_url": "http://h:9000"},
        "profile": "p",
        "anon": True,
    }


# --- memory:// ----------------------------------------------------------------------------


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"/{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_prefix_lists_reads_and_rekeys(memory_root: str):
    fs = fsspec.filesystem("memory")
    blobs = png_blobs(3)
    for index, blob in enumerate(blobs):
        fs.pipe(f"{memory_root}/{'sub/' * index}m{index}.png", blob)
    fs.pipe(f"{memory_root}/readme.md", b"x")

    pool = resolve_pool(f"memory://{memory_root}/")
    same = resolve_pool(f"memory://{memory_root}")
    fs.pipe(f"{memory_root}/m0.png", blobs[0] + b"\0")
    changed = resolve_pool(f"memory://{memory_root}")

    assert pool.uris == [
        f"memory://{memory_root}/m0.png",
        f"memory://{memory_root}/sub/m1.png",
        f"memory://{memory_root}/sub/sub/m2.png",
    ]
    assert pool.read(pool.uris[1]) == blobs[1]
    assert pickle.loads(pickle.dumps(pool)).read(pool.uris[1]) == blobs[1]  # for worker processes
    assert pool.items == same.items
    assert changed.items[0].key != pool.items[0].key
    assert changed.items[1:] == pool.items[1:]


# --- S3 on a moto server ------------------------------------------------------------------


S3Bucket = tuple[str, dict[str, Any]]


def upload_pool(bucket: S3Bucket, n: int = 4, prefix: str = "pool") -> list[str]:
    """Upload ``n`` PNGs (spread over nested prefixes) plus noise; return their URIs, sorted."""
    name, options = bucket
    fs = fsspec.filesystem("s3", **options)
    uris = []
    for index, blob in enumerate(png_blobs(n)):
        key = f"{name}/{prefix}/{'deep/' * (index % 2)}s{index}.png"
        fs.pipe(key, blob)
        uris.append(f"s3://{key}")
    fs.pipe(f"{name}/{prefix}/labels.csv", b"uri,label\n")
    fs.pipe(f"{name}/{prefix}/.hidden/h.png", png_blobs(1)[0])
    return sorted(uris)


@pytest.mark.s3
def test_s3_prefix_is_one_listing_and_reads_are_one_get_each(s3_bucket: S3Bucket, s3_traffic):
    uris = upload_pool(s3_bucket)
    name, options = s3_bucket

    s3_traffic.reset()
    pool = resolve_pool(f"s3://{name}/pool/", storage_options=options)
    assert pool.uris == uris
    assert s3_traffic.count() == s3_traffic.count(kind="list") == 1

    s3_traffic.reset()
    data = [pool.read(uri) for uri in pool.uris]
    assert sorted(data) == sorted(png_blobs(4))
    assert s3_traffic.count() == s3_traffic.count(kind="get") == 4

    assert resolve_pool(f"s3://{name}/pool", storage_options=options).items == pool.items


@pytest.mark.s3
def test_s3_glob_and_single_object_give_the_listing_keys(s3_bucket: S3Bucket, s3_traffic):
    uris = upload_pool(s3_bucket)
    name, options = s3_bucket
    listed = resolve_pool(f"s3://{name}/pool/", storage_options=options)

    s3_traffic.reset()
    globbed = resolve_pool(f"s3://{name}/pool/**/*.png", storage_options=options)
    assert s3_traffic.count(kind="head") == 0
    single = resolve_pool(uris[0], storage_options=options)

    assert globbed.items == listed.items
    assert single.items == listed.items[:1]


@pytest.mark.s3
def test_s3_inventory_manifest_keys_without_any_request(
    tmp_path: Path, s3_bucket: S3Bucket, s3_traffic
):
    uris = upload_pool(s3_bucket)
    name, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    manifest = tmp_path / "inventory.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["bucket", "uri", "size", "last_modified", "etag"])
        for uri in reversed(uris):
            info = fs.info(uri)
            stamp = info["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
            etag = info["ETag"].strip('"')  # inventories carry ETags unquoted
            writer.writerow([name, uri, info["size"], stamp, etag])
    listed = keys_by_uri(resolve_pool(f"s3://{name}/pool/", storage_options=options).items)

    s3_traffic.reset()
    pool = resolve_pool(str(manifest), storage_options=options)

    assert s3_traffic.requests == []
    assert pool.uris == uris[::-1]
    assert keys_by_uri(pool.items) == listed


@pytest.mark.s3
def test_s3_manifest_without_etag_keys_on_size_and_time_without_requests(
    tmp_path: Path, s3_bucket: S3Bucket, s3_traffic
):
    uris = upload_pool(s3_bucket, n=2)
    manifest = tmp_path / "inventory.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"uri": uri, "size": 900, "last_modified": "2024-05-01T10:00:00Z"}) + "\n"
            for uri in uris
        )
    )

    s3_traffic.reset()
    pool = resolve_pool(str(manifest), storage_options=s3_bucket[1])

    assert s3_traffic.requests == []
    assert len(set(keys_by_uri(pool.items).values())) == 2


@pytest.mark.s3
def test_s3_manifest_on_the_bucket_resolves_relative_entries_concurrently(
    s3_bucket: S3Bucket, s3_traffic
):
    upload_pool(s3_bucket, n=2)
    name, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    many = [f"many/{index}.png" for index in range(40)]
    for key in many:
        fs.pipe(f"{name}/{key}", b"png bytes")
    fs.pipe(f"{name}/manifest.txt", "\n".join(["pool/s0.png", *many, "gone.png"]).encode())
    listed = keys_by_uri(resolve_pool(f"s3://{name}/", storage_options=options).items)

    s3_traffic.reset()
    s3_traffic.delay_s = 0.02
    pool = resolve_pool(f"s3://{name}/manifest.txt", storage_options=options)

    assert pool.uris[:2] == [f"s3://{name}/pool/s0.png", f"s3://{name}/many/0.png"]
    assert pool.uris[-1] == f"s3://{name}/gone.png"
    assert [item.unreadable for item in pool.items] == [False] * 41 + [True]
    assert {item.uri: item.key for item in pool.items[:-1]}.items() <= listed.items()
    assert s3_traffic.count(kind="get") == 1  # the manifest itself
    assert s3_traffic.count(kind="head") == 42  # one metadata look-up per item
    assert s3_traffic.peak_in_flight > 4  # ... and not one after the other


@pytest.mark.s3
def test_s3_key_changes_when_the_object_is_rewritten(s3_bucket: S3Bucket):
    uris = upload_pool(s3_bucket, n=2)
    name, options = s3_bucket
    before = resolve_pool(f"s3://{name}/pool/", storage_options=options)
    fsspec.filesystem("s3", **options).pipe(uris[0], b"other bytes")
    after = resolve_pool(f"s3://{name}/pool/", storage_options=options)

    assert after.items[0].key != before.items[0].key
    assert after.items[1] == before.items[1]


@pytest.mark.s3
def test_s3_read_errors_and_content_hash(tmp_path: Path, s3_bucket: S3Bucket):
    upload_pool(s3_bucket, n=2)
    name, options = s3_bucket
    fsspec.filesystem("s3", **options).pipe(f"{name}/pool/empty.png", b"")
    local = tmp_path / "same.png"
    local.write_bytes(png_blobs(2)[0])

    pool = resolve_pool(f"s3://{name}/pool/", content_hash=True, storage_options=options)
    reasons = {}
    for uri in (f"s3://{name}/pool/empty.png", f"s3://{name}/pool/nope.png"):
        with pytest.raises(ItemError) as failure:
            pool.read(uri)
        reasons[uri.rsplit("/", 1)[1]] = failure.value.reason

    assert reasons == {"empty.png": "empty file", "nope.png": "not found"}
    by_uri = keys_by_uri(pool.items)
    assert by_uri[f"s3://{name}/pool/empty.png"].startswith(UNREADABLE_KEY_PREFIX)
    assert (
        by_uri[f"s3://{name}/pool/s0.png"]
        == resolve_pool(str(local), content_hash=True).items[0].key
    )


@pytest.mark.s3
def test_s3_reads_from_many_threads_share_one_filesystem(s3_bucket: S3Bucket):
    upload_pool(s3_bucket, n=8)
    pool = resolve_pool(f"s3://{s3_bucket[0]}/pool/", storage_options=s3_bucket[1])
    results: dict[str, bytes] = {}

    def read(uri: str) -> None:
        results[uri] = pool.read(uri)

    threads = [threading.Thread(target=read, args=(uri,)) for uri in pool.uris]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results.values()) == sorted(png_blobs(8))


@pytest.mark.s3
def test_s3_endpoint_comes_from_the_environment(
    s3_bucket: S3Bucket, s3_server: str, monkeypatch: pytest.MonkeyPatch
):
    import s3fs

    uris = upload_pool(s3_bucket, n=2)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep its old endpoint

    pool = resolve_pool(f"s3://{s3_bucket[0]}/pool/")

    assert pool.uris == uris
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.s3
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("missing/", "no images found under s3://{bucket}/missing/"),
        ("missing", "no such object or prefix: s3://{bucket}/missing"),
        ("pool/**/*.gif", "no files match s3://{bucket}/pool/**/*.gif"),
        ("pool/labels.csv", "manifest s3://{bucket}/pool/labels.csv lists no usable URI"),
        ("nope.csv", "cannot read manifest s3://{bucket}/nope.csv: not found"),
    ],
)
def test_s3_bad_specs_raise_pool_errors(s3_bucket: S3Bucket, path: str, message: str):
    upload_pool(s3_bucket, n=1)
    name, options = s3_bucket

    with pytest.raises(PoolError) as error:
        resolve_pool(f"s3://{name}/{path}", storage_options=options)

    assert str(error.value).startswith(message.format(bucket=name))


def test_items_are_hashable_values():
    item = Item("/a.png", "0" * 32)
    assert {item, Item("/a.png", "0" * 32)} == {item}
    assert not item.unreadable


def test_inventory_bulk_path_gives_the_general_paths_keys(tmp_path: Path) -> None:
    rows = [(f"s3://bkt/img/{i:04d}.jpg", str(100 + i), f"{i:032x}") for i in range(50)]
    fast = tmp_path / "fast.csv"
    fast.write_text(
        "uri,size,last_modified,etag\n"
        + "".join(f"{u},{s},2026-11-01T00:00:00Z,{e}\n" for u, s, e in rows)
    )
    # Quoted ETags (as some exports write them) take the general, line-by-line path.
    general = tmp_path / "general.csv"
    general.write_text(
        "uri,size,last_modified,etag\n"
        + "".join(f'{u},{s},2026-11-01T00:00:00Z,"""{e}"""\n' for u, s, e in rows)
    )
    crlf = tmp_path / "crlf.csv"  # what Python's csv module writes by default
    crlf.write_bytes(fast.read_bytes().replace(b"\n", b"\r\n"))
    a, b, c = (resolve_pool(str(path)) for path in (fast, general, crlf))
    assert [i.uri for i in a.items] == [u for u, _, _ in rows]
    assert [i.key for i in a.items] == [i.key for i in b.items] == [i.key for i in c.items]
    assert [i.uri for i in c.items] == [i.uri for i in a.items]


def test_large_inventory_is_memoized_by_its_text(tmp_path: Path, monkeypatch) -> None:
    from alcli.sources import etag_manifests as sources

    monkeypatch.setattr(sources, "MEMO_MIN_BYTES", 100)  # memoize this small one too
    manifest = tmp_path / "inventory.csv"
    rows = [(f"s3://bkt/img/{i:04d}.jpg", f"{i:032x}") for i in range(300)]
    manifest.write_text("uri,etag\n" + "".join(f"{u},{e}\n" for u, e in rows))
    memo = tmp_path / "memo"
    plain = resolve_pool(str(manifest))
    first = resolve_pool(str(manifest), memo_dir=memo)
    assert len(list(memo.glob("*.table"))) == 1
    parses: list[int] = []
    real = sources._inventory_items
    monkeypatch.setattr(sources, "_inventory_items", lambda text: parses.append(1) or real(text))
    second = resolve_pool(str(manifest), memo_dir=memo)
    assert parses == []  # read back, not parsed
    assert second.items == first.items == plain.items
    assert all(type(item) is Item for item in second.items)

    # a torn memo is ignored and rewritten; a changed manifest gets its own memo
    (path,) = memo.glob("*.table")
    path.write_bytes(path.read_bytes()[:5000])
    assert resolve_pool(str(manifest), memo_dir=memo).items == plain.items
    assert parses == [1]
    manifest.write_text("uri,etag\n" + "".join(f"{u},{e}0\n" for u, e in rows))
    changed = resolve_pool(str(manifest), memo_dir=memo)
    assert [i.key for i in changed.items] != [i.key for i in plain.items]
    assert len(list(memo.glob("*.table"))) == 2


def test_a_text_memo_of_an_earlier_version_is_read_once_and_rewritten(
    tmp_path: Path, monkeypatch
) -> None:
    from alcli.sources import etag_manifests as sources

    monkeypatch.setattr(sources, "MEMO_MIN_BYTES", 100)
    manifest = tmp_path / "inventory.csv"
    rows = [(f"s3://bkt/img/{i:04d}.jpg", f"{i:032x}") for i in range(50)]
    manifest.write_text("uri,etag\n" + "".join(f"{u},{e}\n" for u, e in rows))
    plain = resolve_pool(str(manifest))
    memo = tmp_path / "memo"
    memo.mkdir()
    digest = sources.hashlib.blake2b(manifest.read_bytes(), digest_size=20).hexdigest()
    legacy = memo / f"{digest}.items"
    items = plain.items
    legacy.write_text(
        f"alcli-items-v1 {len(items)}\n"
        + "\n".join(i.uri for i in items)
        + "\n"
        + "\n".join(i.key for i in items)
    )
    parses: list[int] = []
    real = sources._inventory_items
    monkeypatch.setattr(sources, "_inventory_items", lambda text: parses.append(1) or real(text))
    assert resolve_pool(str(manifest), memo_dir=memo).items == plain.items
    assert parses == []  # read from the text memo, not parsed
    assert not legacy.exists()
    assert len(list(memo.glob("*.table"))) == 1
    assert resolve_pool(str(manifest), memo_dir=memo).items == plain.items


def test_manifest_memo_keeps_only_the_newest(tmp_path: Path, monkeypatch) -> None:
    from alcli.sources import etag_manifests as sources

    monkeypatch.setattr(sources, "MEMO_MIN_BYTES", 10)
    memo = tmp_path / "memo"
    for version in range(sources.MEMO_KEEP + 3):
        manifest = tmp_path / f"inv{version}.csv"
        manifest.write_text(f"uri,etag\ns3://bkt/{version}.jpg,{version:032x}\n")
        resolve_pool(str(manifest), memo_dir=memo)
    assert len(list(memo.glob("*.table"))) == sources.MEMO_KEEP
    # a memo folder that cannot be written costs nothing but the memo
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    manifest = tmp_path / "late.csv"
    manifest.write_text("uri,etag\ns3://bkt/late.jpg,abc\n")
    assert len(resolve_pool(str(manifest), memo_dir=blocked).items) == 1


# --- bad entries: each one is that entry's problem, with its reason -----------------------

LOOP = f"unreadable: {os.strerror(errno.ELOOP)}"


def test_walk_keeps_dangling_links_and_link_loops_as_unreadable_items(
    tmp_path: Path, png_pool: PngPool
):
    images = png_pool(2)
    root = tmp_path / "pool"
    (root / "dangling.png").symlink_to("nowhere.png")
    (root / "loop-a.png").symlink_to("loop-b.png")
    (root / "loop-b.png").symlink_to("loop-a.png")
    (root / "loop-dir").symlink_to("loop-dir")  # not an image name: not an item either
    (root / "again").symlink_to(".")  # a folder cycle, cut by its real path

    pool = resolve_pool(str(root))

    bad = {str(root / name) for name in ("dangling.png", "loop-a.png", "loop-b.png")}
    assert pool.uris == sorted([*uris_of(images), *bad])
    assert {item.uri for item in pool.items if item.unreadable} == bad
    assert pool.unreadable == {
        str(root / "dangling.png"): "not found (dangling symlink)",
        str(root / "loop-a.png"): LOOP,
        str(root / "loop-b.png"): LOOP,
    }
    assert pool.skipped == []


def test_glob_manifest_and_content_hash_give_bad_entries_their_reasons(
    tmp_path: Path, png_pool: PngPool
):
    png_pool(1)
    root = tmp_path / "pool"
    (root / "loop-a.png").symlink_to("loop-b.png")
    (root / "loop-b.png").symlink_to("loop-a.png")
    (root / "dangling.png").symlink_to("nowhere.png")
    manifest = root / "list.txt"
    manifest.write_text("img00000.png\nloop-a.png\nmissing.png\n../pool\ndangling.png\n")
    expected = {
        str(root / "loop-a.png"): LOOP,
        str(root / "missing.png"): "not found",
        str(root): "unreadable: not a file",
        str(root / "dangling.png"): "not found (dangling symlink)",
    }
    for content_hash in (False, True):
        listed = resolve_pool(str(manifest), content_hash=content_hash)
        assert listed.unreadable == expected
        assert [item.unreadable for item in listed.items] == [False, True, True, True, True]

    globbed = resolve_pool(str(root / "*.png"))
    assert globbed.unreadable == {
        str(root / "dangling.png"): "not found (dangling symlink)",
        str(root / "loop-a.png"): LOOP,
        str(root / "loop-b.png"): LOOP,
    }


def test_csv_row_with_more_fields_than_columns_is_reported_not_truncated(
    tmp_path: Path, png_pool: PngPool
):
    png_pool(1)
    manifest = tmp_path / "pool" / "list.csv"
    manifest.write_text("uri,label\nimg00000.png,cat\n" + "a,b.png,dog\n")

    pool = resolve_pool(str(manifest))

    # The uri is not the last column: the row is reported under its first cell.
    assert pool.uris == [str(tmp_path / "pool/img00000.png"), str(tmp_path / "pool/a")]
    assert pool.unreadable == {
        str(tmp_path / "pool/a"): f"bad manifest row {manifest}:3: 3 fields for 2 columns "
        "(quote a URI that holds a comma)"
    }


def _expected_local_key(path: Path) -> str:
    """The documented key scheme, computed over the name's own bytes."""
    import hashlib

    info = os.stat(path)
    digest = hashlib.blake2b(b"local", digest_size=16)
    for field in (os.fsencode(os.path.realpath(path)), info.st_size, info.st_mtime_ns):
        digest.update(b"\0")
        digest.update(field if isinstance(field, bytes) else str(field).encode())
    return digest.hexdigest()


def test_non_utf8_names_are_kept_and_keyed_as_their_bytes(tmp_path: Path, png_pool: PngPool):
    (image,) = png_pool(1)
    root = tmp_path / "pool"
    odd = root / os.fsdecode(b"odd-\xff.png")
    odd.write_bytes(png_blobs(1, seed=3)[0])
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(os.fsencode(str(odd)) + b"\n" + os.fsencode(str(image)) + b"\n")
    listing = io.StringIO(f"{odd}\n{image}\n")  # what stdin gives with surrogateescape

    walked = resolve_pool(str(root))
    expected = sorted([Item(str(image), _expected_local_key(image)),
                       Item(str(odd), _expected_local_key(odd))])  # fmt: skip
    assert walked.items == expected  # a UTF-8 name keeps the key it always had
    assert sorted(resolve_pool(str(root / "*.png")).items) == expected
    assert sorted(resolve_pool(str(manifest)).items) == expected
    assert sorted(resolve_pool("-", stdin=listing).items) == expected
    assert walked.read(str(odd)) == odd.read_bytes()


def test_unlistable_sub_folder_is_noted_and_the_walk_goes_on(tmp_path: Path, png_pool: PngPool):
    """Listing a folder whose path passes PATH_MAX fails (ENAMETOOLONG), even as root."""
    images = png_pool(1)
    root = tmp_path / "pool"
    name = "d" * 250
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    path = str(root)
    try:
        while len(os.fsencode(path)) < 4096:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = child, f"{path}/{name}"
    finally:
        os.close(fd)

    pool = resolve_pool(str(root))

    assert pool.uris == uris_of(images)
    assert pool.skipped == [f"{path}: cannot list: {os.strerror(errno.ENAMETOOLONG)}"]
