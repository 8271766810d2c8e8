"""Fixtures shared by every test module.

S3 (a real moto server on 127.0.0.1; mark such tests ``@pytest.mark.s3``):

- ``s3_server`` (session): the endpoint URL, e.g. ``"http://127.0.0.1:41234"``. While it is
  up, the environment holds dummy AWS credentials and no ``AWS_PROFILE`` /
  ``AWS_ENDPOINT_URL*``, so nothing reaches a real account.
- ``s3_traffic`` (per test): the ``MotoS3Server`` behind it, its request log cleared:
  ``s3_traffic.reset()`` right before the step you measure, then ``s3_traffic.count(kind="get")``
  / ``count(method="HEAD")`` / ``counts()``; ``s3_traffic.delay_s = 0.02`` adds latency to every
  request (set back to 0 after the test).
- ``s3_bucket`` (per test): ``(bucket_name, storage_options)``, a fresh empty bucket and the
  options ``resolve_pool`` / ``fsspec.filesystem("s3", **options)`` need to reach it.

Images:

- ``png_pool(n, subdir="pool", seed=0, size=16, nested=False)``: writes ``n`` real PNGs under
  ``tmp_path / subdir`` and returns their paths, sorted.
- ``broken_images(folder=None)``: writes a corrupt PNG, a zero-byte ``.png`` and a text file
  named ``.jpg`` (default folder ``tmp_path / "broken"``); returns ``{kind: path}``.

Signals: ``python_sigint`` gives the test Python's own SIGINT handler, even when the suite
inherited SIGINT ignored (started in the background): Ctrl-C tests need it.

Store faults: ``tests/faultproxy.py`` (``FaultProxy``) sits in front of the S3 server and
hangs chosen GETs or takes the store down; see ``test_faults.py``.
"""

from __future__ import annotations

import itertools
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import write_broken_images, write_pngs
from s3server import MotoS3Server

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_AWS_ENV_CLEARED = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def _moto_s3() -> Iterator[MotoS3Server]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _AWS_ENV.items():
            patch.setenv(name, value)
        for name in _AWS_ENV_CLEARED:
            patch.delenv(name, raising=False)
        with MotoS3Server() as server:
            yield server


@pytest.fixture(scope="session")
def s3_server(_moto_s3: MotoS3Server) -> str:
    return _moto_s3.endpoint_url


@pytest.fixture
def s3_traffic(_moto_s3: MotoS3Server) -> Iterator[MotoS3Server]:
    _moto_s3.reset()
    yield _moto_s3
    _moto_s3.delay_s = 0.0


@pytest.fixture
def s3_bucket(s3_server: str) -> tuple[str, dict[str, Any]]:
    import boto3

    name = f"test-{next(_bucket_numbers)}-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    options: dict[str, Any] = {
        "key": _AWS_ENV["AWS_ACCESS_KEY_ID"],
        "secret": _AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    return name, options


@pytest.fixture
def png_pool(tmp_path: Path) -> Callable[..., list[Path]]:
    def write(
        n: int = 8,
        *,
        subdir: str = "pool",
        seed: int = 0,
        size: int = 16,
        nested: bool = False,
    ) -> list[Path]:
        return write_pngs(tmp_path / subdir, n, seed=seed, size=size, nested=nested)

    return write


@pytest.fixture
def broken_images(tmp_path: Path) -> Callable[..., dict[str, Path]]:
    def write(folder: Path | None = None) -> dict[str, Path]:
        return write_broken_images(folder if folder is not None else tmp_path / "broken")

    return write


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Typer's runner, run from ``tmp_path`` with the embedding cache inside it."""
    monkeypatch.setenv("ALCLI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return CliRunner()


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler (KeyboardInterrupt) during the test, whatever this process
    inherited: a suite started in the background by a non-interactive shell inherits SIGINT
    ignored, and then neither ``_thread.interrupt_main()`` nor a child process's Ctrl-C
    does anything (a child inherits an ignored signal; a handled one resets to default)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Two intra-op threads crawl when other processes share the two cores; one does not."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- Label Studio (a real server; see tests/labelstudio_server.py) -------------------------


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Label Studio 1.23.2 server on 127.0.0.1 for the session (``LabelStudioServer``).

    Its document root is the session's temporary folder, so every test's ``tmp_path`` is
    under it; each test makes its own project. Without the server's virtualenv (``make test``
    builds it) the tests skip, except in CI (``CI=true``), where that is a failure.
    """
    from labelstudio_server import VENV_ENV, LabelStudioServer, executable, venv_path

    venv = venv_path()
    if executable(venv) is None:
        message = (
            f"no Label Studio virtualenv at {venv} (run 'make labelstudio', or set {VENV_ENV})"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.getbasetemp()
    with LabelStudioServer(venv, tmp_path_factory.mktemp("label-studio"), root) as server:
        yield server
