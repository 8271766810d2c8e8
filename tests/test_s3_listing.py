"""S3 prefixes listed through obstore give exactly s3fs's items and keys, against a real moto
server: awkward keys, directory markers, hidden names, pagination, each storage option, and
every case where obstore's answer could differ going to s3fs instead."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from alcli.sources import resolve_pool
from alcli.sources.listing import list_s3_fast
from alcli.sources.objectstore import FastS3
from alcli.sources.reading import s3_options

pytestmark = pytest.mark.s3

S3Bucket = tuple[str, dict[str, Any]]

#: Keys that are items: spaces, ``+``, unicode, ``%``, ``#``, ``?``, ``*``, upper case, an
#: image-named folder, a space at a segment's end, nesting.
ITEM_KEYS = [
    "a.png",
    "sp ace.png",
    "plus+x.png",
    "ünï/é.png",
    "%41.png",
    "hash#.jpg",
    "q?x.png",
    "star*.png",
    "up.PNG",
    "z.png/inner.png",
    "trail /t.webp",
    "deep/er/d.jpeg",
    "k\u00a0nb.png",
]
#: Keys that are not: a directory marker, hidden names (file and folder), other extensions.
OTHER_KEYS = ["dir/", ".hidden.png", ".hid/h.png", "deep/.h/x.png", "labels.csv", "noext"]


@pytest.fixture
def listed_by(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[Any, list[str]]]:
    """``listed_by(spec, options, client)``: (the pool, ``["obstore"]`` for each listing whose
    items came from obstore).

    The obstore path is the real ``list_s3_fast``, wrapped to note when its answer is used."""
    from alcli.sources import listing

    calls: list[str] = []
    real = listing.list_s3_fast

    def noting(fast: FastS3, fs: Any, root: str) -> tuple[Any, bool]:
        items, failed = real(fast, fs, root)
        if items is not None:
            calls.append("obstore")
        return items, failed

    monkeypatch.setattr(listing, "list_s3_fast", noting)

    def resolve(
        spec: str, options: dict[str, Any], client: str = "obstore"
    ) -> tuple[Any, list[str]]:
        calls.clear()
        with monkeypatch.context() as patch:
            patch.setenv("ALCLI_S3_CLIENT", client)
            pool = resolve_pool(spec, storage_options=options)
        return pool, list(calls)

    return resolve


def put(bucket: S3Bucket, keys: list[str], prefix: str = "pool/") -> None:
    import boto3

    name, options = bucket
    client = boto3.client(
        "s3", endpoint_url=options["client_kwargs"]["endpoint_url"], region_name="us-east-1"
    )

    def one(key: str) -> None:
        body = b"" if key.endswith("/") or key.startswith("empty") else key.encode() + b"!"
        client.put_object(Bucket=name, Key=prefix + key, Body=body)

    with ThreadPoolExecutor(8) as workers:
        list(workers.map(one, keys))


def same_as_s3fs(spec: str, options: dict[str, Any], listed_by: Any) -> tuple[Any, list[str]]:
    fast, calls = listed_by(spec, options)
    slow, slow_calls = listed_by(spec, options, "fsspec")
    assert slow_calls == []
    assert fast.items == slow.items  # URIs and cache keys, in order
    assert fast.skipped == slow.skipped
    return fast, calls


def test_obstore_lists_awkward_keys_as_s3fs_does(s3_bucket: S3Bucket, listed_by, s3_traffic):
    put(s3_bucket, ITEM_KEYS + OTHER_KEYS)
    put(s3_bucket, ["pool2/next.png", "poolside.png"], prefix="")  # not below pool/
    name, options = s3_bucket
    s3_traffic.reset()
    pool, calls = same_as_s3fs(f"s3://{name}/pool/", options, listed_by)
    assert calls == ["obstore"]
    assert s3_traffic.count(kind="list") == 2  # one each
    assert pool.uris == sorted(f"s3://{name}/pool/{key}" for key in ITEM_KEYS)
    # the prefix without its slash (an info call, then the listing) and a nested prefix
    assert same_as_s3fs(f"s3://{name}/pool", options, listed_by)[1] == ["obstore"]
    nested, calls = same_as_s3fs(f"s3://{name}/pool/deep/", options, listed_by)
    assert nested.uris == [f"s3://{name}/pool/deep/er/d.jpeg"]
    assert calls == ["obstore"]


def test_a_rewritten_object_gets_a_new_key_from_either_listing(s3_bucket, listed_by):
    put(s3_bucket, ["a.png", "b.png"])
    name, options = s3_bucket
    before, _ = listed_by(f"s3://{name}/pool/", options)
    put(s3_bucket, ["a.png"], prefix="other/")  # an object elsewhere changes nothing
    import boto3

    boto3.client(
        "s3", endpoint_url=options["client_kwargs"]["endpoint_url"], region_name="us-east-1"
    ).put_object(Bucket=name, Key="pool/a.png", Body=b"rewritten")
    after, _ = same_as_s3fs(f"s3://{name}/pool/", options, listed_by)
    assert after.items[0].key != before.items[0].key
    assert after.items[1:] == before.items[1:2]


@pytest.mark.parametrize(
    ("special", "why"),
    [
        ("d.png/", "an image-named directory marker reads as an empty object in obstore"),
        ("empty.png", "an empty image-named object: maybe a marker"),
        ("two//slashes.png", "an empty segment: no obstore path"),
        ("x/../y.png", "a '..' segment: no obstore path"),
        ("ctrl\x7f.png", "a control character: no obstore path"),
    ],
)
def test_keys_obstore_could_get_wrong_are_listed_by_s3fs(
    s3_bucket: S3Bucket, listed_by, special: str, why: str
):
    import fsspec

    put(s3_bucket, ["a.png", "b/c.png", special])
    name, options = s3_bucket
    same_as_s3fs(f"s3://{name}/pool/", options, listed_by)
    fast = FastS3.from_options(options)
    assert fast is not None
    fs = fsspec.filesystem("s3", **options)
    assert list_s3_fast(fast, fs, f"{name}/pool") == (None, False), why  # s3fs lists it
    assert fast.serves(name)  # and obstore still reads the bucket


def test_a_bucket_root_is_listed_by_s3fs(s3_bucket: S3Bucket, listed_by):
    put(s3_bucket, ["a.png", "/lead.png"], prefix="")
    name, options = s3_bucket
    pool, calls = same_as_s3fs(f"s3://{name}/", options, listed_by)
    assert calls == []
    assert f"s3://{name}/a.png" in pool.uris


def test_listings_past_one_page_are_whole(s3_bucket: S3Bucket, listed_by):
    keys = [f"p{index:04d}.png" for index in range(1005)]  # moto answers 1,000 keys a page
    put(s3_bucket, keys)
    name, options = s3_bucket
    pool, calls = same_as_s3fs(f"s3://{name}/pool/", options, listed_by)
    assert calls == ["obstore"]
    assert len(pool.items) == 1005 == len(set(pool.uris))


def test_an_empty_prefix_and_a_single_object_say_what_s3fs_says(s3_bucket: S3Bucket, listed_by):
    from alcli.errors import PoolError

    put(s3_bucket, ["only.png"], prefix="")
    put(s3_bucket, ["notes.txt"])
    name, options = s3_bucket
    for client in ("obstore", "fsspec"):
        with pytest.raises(PoolError, match=f"^no images found under s3://{name}/pool/ "):
            listed_by(f"s3://{name}/pool/", options, client)
    # a "prefix" that is an object: s3fs's listing finds the object itself
    assert same_as_s3fs(f"s3://{name}/only.png/", options, listed_by)[0].uris == [
        f"s3://{name}/only.png"
    ]


def test_each_storage_option_lists_through_obstore(
    s3_bucket: S3Bucket, s3_server: str, listed_by, tmp_path: Path, monkeypatch
):
    """--endpoint-url with credentials from the environment, --profile, --anon."""
    import boto3

    put(s3_bucket, ["a.png", "b c.png"])
    name, _ = s3_bucket
    spec = f"s3://{name}/pool/"

    on_endpoint = s3_options(endpoint_url=s3_server)
    assert same_as_s3fs(spec, on_endpoint, listed_by)[1] == ["obstore"]

    credentials = tmp_path / "credentials"
    credentials.write_text("[other]\naws_access_key_id = testing\naws_secret_access_key = t\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    with_profile = s3_options(endpoint_url=s3_server, profile="other")
    assert same_as_s3fs(spec, with_profile, listed_by)[1] == ["obstore"]

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:ListBucket", "s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
            }
        ],
    }
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").put_bucket_policy(
        Bucket=name, Policy=json.dumps(policy)
    )
    anonymous = s3_options(endpoint_url=s3_server, anon=True)
    pool, calls = same_as_s3fs(spec, anonymous, listed_by)
    assert calls == ["obstore"]
    assert len(pool.items) == 2


def test_a_bucket_whose_listing_obstore_cannot_do_goes_to_s3fs(
    s3_bucket: S3Bucket, listed_by, monkeypatch
):
    """obstore failing at the store (say a bucket in another region: moto has no such
    thing, so the refusal is obstore's error as it would come) where s3fs lists the prefix:
    s3fs's items, and that bucket's GETs go to s3fs too, as after such a GET."""
    put(s3_bucket, ["a.png", "b.png"])
    name, options = s3_bucket
    expected, _ = listed_by(f"s3://{name}/pool/", options, "fsspec")

    def refuse(self: FastS3, bucket: str, prefix: str) -> list[dict[str, Any]]:
        raise RuntimeError("Generic S3 error: 301 Moved Permanently (another region)")

    monkeypatch.setattr(FastS3, "list_prefix", refuse)
    pool, calls = listed_by(f"s3://{name}/pool/", options)
    assert calls == []
    assert pool.items == expected.items
    fast = pool.filesystems.fast_s3()
    assert fast is not None
    assert not fast.serves(name)


@pytest.mark.slow  # s3fs's own retries against a closed port take ~7 s; obstore's ~0.6 s
def test_a_dead_endpoint_is_an_s3fs_listing_error(s3_bucket: S3Bucket, listed_by):
    from alcli.errors import PoolError

    name, options = s3_bucket
    dead = {**options, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    messages = []
    for client in ("obstore", "fsspec"):
        with pytest.raises(PoolError) as error:
            listed_by(f"s3://{name}/pool/", dead, client)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"cannot list {name}/pool: ")
