"""Store faults while reading items, and Ctrl-C: real moto S3 behind a fault-injecting proxy
(``faultproxy.py``), real s3fs, the real CLI (in-process, and one real subprocess).

Every wait is bounded: reads use a short ``--item-timeout``, the proxy stops hanging by
itself after ``HANG_LIMIT_S``, and subprocesses run under timeouts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alcli.cli import app
from faultproxy import FaultProxy

pytestmark = [pytest.mark.s3, pytest.mark.slow]

TINY = ["--model", "mobilenet_v3_small", "--weights", "none", "--image-size", "32"]
#: A hung GET is held at most this long (from the proxy's start): code without a deadline
#: ends, wrongly, instead of hanging the suite; long enough for a cold run on a busy machine.
HANG_LIMIT_S = 180.0


@pytest.fixture
def s3_pool(
    s3_bucket: tuple[str, dict[str, Any]], png_pool: Callable[..., list[Path]]
) -> Callable[[int], tuple[str, list[str], str]]:
    """``upload(n)``: n PNGs under ``s3://bucket/imgs/``; (pool spec, uris in pool order,
    the moto endpoint)."""

    def upload(n: int) -> tuple[str, list[str], str]:
        import fsspec

        bucket, options = s3_bucket
        fs = fsspec.filesystem("s3", **options)
        for path in png_pool(n):
            fs.put_file(str(path), f"{bucket}/imgs/{path.name}")
        uris = [f"s3://{bucket}/imgs/img{i:05d}.png" for i in range(n)]
        return f"s3://{bucket}/imgs/", uris, options["client_kwargs"]["endpoint_url"]

    return upload


@pytest.fixture
def proxies() -> Iterator[Callable[..., FaultProxy]]:
    """``start(upstream, **faults)``: a started FaultProxy, stopped after the test."""
    started: list[FaultProxy] = []

    def start(upstream: str, **faults: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, hang_limit_s=HANG_LIMIT_S, **faults)
        proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def key_of(uri: str) -> str:
    """The object key of ``s3://bucket/key``."""
    return uri.split("/", 3)[3]


def embed(runner: CliRunner, pool: str, endpoint: str, *extra: str) -> Any:
    args = ["embed", pool, *TINY, "--endpoint-url", endpoint, "--batch-size", "8", *extra]
    return runner.invoke(app, args)


def test_a_hung_get_is_skipped_after_the_item_timeout_and_the_rest_is_stored(
    runner, tmp_path, s3_pool, proxies
) -> None:
    pool, uris, moto = s3_pool(40)
    proxy = proxies(moto, hang_keys={key_of(uris[13])})
    (tmp_path / "alcli.toml").write_text("item-timeout = 2\n")  # the runner works in tmp_path
    first = embed(runner, pool, proxy.url, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["failures"] == [{"uri": uris[13], "reason": "timed out after 2 s"}]
    assert (summary["embedded"], summary["cached"], summary["failed"]) == (39, 0, 1)
    assert proxy.hung  # the GET did reach the store and hang there

    proxy.release()  # the object answers again: only it is read and embedded
    again = json.loads(embed(runner, pool, proxy.url, "--json").stdout)
    assert (again["embedded"], again["cached"], again["failed"]) == (1, 39, 0)


def test_the_store_dying_mid_embed_stops_the_run_and_a_rerun_embeds_the_rest(
    runner, s3_pool, proxies
) -> None:
    pool, _, moto = s3_pool(64)
    proxy = proxies(moto, down_after_gets=20)
    dead = embed(runner, pool, proxy.url, "--item-timeout", "2", "--io-threads", "4")
    assert dead.exit_code == 1, dead.output
    assert not proxy.is_up
    message = dead.stderr.strip().splitlines()[-1]
    assert message.startswith("alcli: error: the store stopped answering: 8 items in a row")
    saved = re.search(r"; (\d+) embedded and saved; rerun to continue$", message)
    assert saved, message
    embedded = int(saved.group(1))
    assert 8 <= embedded < 64  # at least the first batch, of the first 20 answered GETs

    proxy.up()  # the store is back: the rerun reads only what is missing
    again = embed(runner, pool, proxy.url, "--item-timeout", "2", "--json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert (summary["cached"], summary["embedded"], summary["failed"]) == (
        embedded,
        64 - embedded,
        0,
    )


def test_ctrl_c_mid_embed_exits_130_promptly_and_keeps_every_finished_batch(
    runner, tmp_path, s3_pool, proxies, python_sigint
) -> None:
    """A real ``alcli embed`` process, held by a hung GET at item 40 (batches of 8): once the
    five batches before it are in the cache, SIGINT. Item 40 holds the output order, so those
    five batches are exactly what was finished; a rerun must find all of them."""
    pool, uris, moto = s3_pool(64)
    proxy = proxies(moto, hang_keys={key_of(uris[40])})
    cache = tmp_path / "cache"  # the runner's cache too, for the rerun
    env = {**os.environ, "ALCLI_CACHE_DIR": str(cache)}
    args = ["embed", pool, *TINY, "--endpoint-url", proxy.url, "--batch-size", "8"]
    process = subprocess.Popen(
        [sys.executable, "-m", "alcli", *args, "--item-timeout", "600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,  # SIGINT starts at its default there (python_sigint: not inherited ignored)
    )
    try:
        assert proxy.wait_for_hang(120), "the hung GET never came"
        deadline = time.monotonic() + 120
        while len(list(cache.glob("embeddings/segments/*/*.seg"))) < 5:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the first five batches were never stored"
            time.sleep(0.05)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert took < 30, took  # not the hung GET's retries, nor the 600 s item timeout

    proxy.release()
    rerun = embed(runner, pool, proxy.url, "--json")
    assert rerun.exit_code == 0, rerun.output
    summary = json.loads(rerun.stdout)
    assert (summary["cached"], summary["embedded"], summary["failed"]) == (40, 24, 0)


def test_the_proxy_passes_everything_through_when_told_nothing(s3_pool, proxies) -> None:
    """The proxy itself: listings, HEADs and GETs answered as the store answers them."""
    import fsspec

    _, uris, moto = s3_pool(3)
    proxy = proxies(moto)
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": proxy.url, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    direct = {**options, "client_kwargs": {**options["client_kwargs"], "endpoint_url": moto}}
    via_proxy, via_moto = fsspec.filesystem("s3", **options), fsspec.filesystem("s3", **direct)
    folder = uris[0].rsplit("/", 1)[0]
    assert via_proxy.ls(folder, detail=True) == via_moto.ls(folder, detail=True)
    assert via_proxy.info(uris[1])["ETag"] == via_moto.info(uris[1])["ETag"]
    assert via_proxy.cat_file(uris[2]) == via_moto.cat_file(uris[2])
    assert proxy.count("list") >= 1
    assert proxy.count("get") == 1
