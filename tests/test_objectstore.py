"""The S3 GET hot path (obstore) against a real moto server: one GET per item, the same bytes
and failures as the fsspec path, the fallbacks, and the per-item deadline."""

from __future__ import annotations

import time
from typing import Any

import pytest

from alcli.errors import ItemError, StoreUnreachableError
from alcli.sources import Pool, resolve_pool
from alcli.sources.objectstore import FastS3
from faultproxy import FaultProxy

pytestmark = pytest.mark.s3


@pytest.fixture
def objects(s3_bucket: tuple[str, dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    uris = []
    for number, name in enumerate(["a b.png", "c+d.png", "ünï/é.png", "x.png"]):
        fs.pipe_file(f"{bucket}/imgs/{name}", bytes([number + 1]) * (100 + number))
        uris.append(f"s3://{bucket}/imgs/{name}")
    return uris, options


def test_reads_take_one_get_each_and_give_the_fsspec_bytes(objects, s3_traffic, monkeypatch):
    uris, options = objects
    pool = resolve_pool(uris[0].rsplit("/", 2)[0] + "/", storage_options=options)
    assert isinstance(pool.filesystems.fast_s3(), FastS3)
    s3_traffic.reset()
    fast = [pool.read(uri) for uri in uris] + [pool.read(uri, timeout=10) for uri in uris]
    assert s3_traffic.counts() == {"GET": 2 * len(uris)}  # no HEAD, no listing
    monkeypatch.setenv("ALCLI_S3_CLIENT", "fsspec")
    plain = Pool("x", [], storage_options=options)
    assert plain.filesystems.fast_s3() is None
    assert fast == [plain.read(uri) for uri in uris] * 2


def test_options_it_cannot_honour_leave_s3_to_fsspec() -> None:
    assert FastS3.from_options({"requester_pays": True}) is None
    assert FastS3.from_options({"client_kwargs": {"verify": False}}) is None
    anon = FastS3.from_options({"anon": True, "endpoint_url": "http://127.0.0.1:9"})
    assert anon is not None
    assert anon._config["skip_signature"] is True


def test_a_bucket_obstore_cannot_serve_goes_back_to_fsspec(objects, monkeypatch) -> None:
    uris, options = objects
    pool = Pool("x", [], storage_options=options)
    fast = pool.filesystems.fast_s3()
    assert fast is not None

    def refuse(*args: Any) -> bytes:
        raise RuntimeError("Generic S3 error: 301 Moved Permanently (another region)")

    monkeypatch.setattr(fast, "get", refuse)
    assert pool.read(uris[2]) == bytes([3]) * 102  # read by fsspec instead
    assert not fast.serves(uris[2].split("/")[2])


def test_failures_are_sorted_as_the_fsspec_path_sorts_them(objects) -> None:
    uris, options = objects
    pool = Pool("x", [], storage_options=options)
    for timeout in (None, 5):
        with pytest.raises(ItemError) as missing:
            pool.read(uris[0] + ".gone.png", timeout)
        assert missing.value.reason == "not found"
        assert not isinstance(missing.value, StoreUnreachableError)
    dead = Pool(
        "x",
        [],
        storage_options={**options, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}},
    )
    with pytest.raises(StoreUnreachableError, match="connection failed"):
        dead.read(uris[0], 5)


def test_a_hung_get_times_out_at_the_deadline(objects, s3_server) -> None:
    uris, options = objects
    proxy = FaultProxy(s3_server, hang_keys={uris[3].split("/", 3)[3]}, hang_limit_s=30)
    url = proxy.start()
    try:
        pool = Pool("x", [], storage_options={**options, "client_kwargs": {"endpoint_url": url}})
        assert pool.read(uris[0], 5)
        started = time.monotonic()
        with pytest.raises(StoreUnreachableError) as hung:
            pool.read(uris[3], 1)
        assert hung.value.reason == "timed out after 1 s"
        assert time.monotonic() - started < 5
    finally:
        proxy.stop()


def test_the_deadline_budget_never_outlasts_the_deadline() -> None:
    from alcli.sources.objectstore import _deadline_config

    for deadline in (0.5, 1.0, 2.0, 60.0, 600.0):
        config = _deadline_config(deadline)
        per_try = config["client_options"]["timeout"].total_seconds()
        retries = config["retry_config"]
        worst = (
            retries["retry_timeout"].total_seconds()  # tries started before this ...
            + retries["backoff"]["max_backoff"].total_seconds()  # ... one pause ...
            + per_try  # ... and one last try
        )
        assert worst <= deadline + 1e-9
        assert per_try >= deadline / 2  # a slow but live store still gets most of it
