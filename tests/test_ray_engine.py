"""``--engine ray`` (issue 15): real Ray, no mocks.

Ray is started once for the module's local tests (``ray.init(num_cpus=2)``), then, for the
last test, replaced by a two-node ``ray.cluster_utils.Cluster`` on this machine, so actors
run on two raylets. Every comparison is against the threads engine on the same pool: the same
items, keys, embeddings (within float tolerance) and failures.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from alcli.cli import app
from alcli.embedding import EmbedOptions, EmbedResult, embed
from helpers import png_blobs, write_broken_images, write_pngs

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray", reason="the ray extra: pip install 'alcli[ray]'")

TINY: dict[str, Any] = {
    "model": "mobilenet_v3_small",
    "weights": "none",
    "image_size": 32,
    "batch_size": 4,
}
THREADS = EmbedOptions(**TINY)
RAY = EmbedOptions(**TINY, engine="ray", actors=2)
RAY_ONE = EmbedOptions(**TINY, engine="ray", actors=1)  # half the actor start-up CPU


@pytest.fixture(scope="module")
def local_ray() -> None:
    """One local Ray for the module (two CPUs, no dashboard)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def _mixed_pool(folder: Path, n: int = 14) -> Path:
    """PNGs, a JPEG and a WebP (every format alcli reads travels through Ray), and the three
    kinds of broken item."""
    write_pngs(folder, n, size=20)
    pixels = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for form in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=form)
        (folder / f"photo.{form.lower()}").write_bytes(buffer.getvalue())
    write_broken_images(folder)
    return folder


def _same(a: EmbedResult, b: EmbedResult) -> None:
    assert [i.uri for i in a.items] == [i.uri for i in b.items]
    assert [i.key for i in a.items] == [i.key for i in b.items]
    assert a.fingerprint == b.fingerprint
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-4, atol=1e-5)
    assert [(f.index, f.uri, f.reason) for f in a.failures] == [
        (f.index, f.uri, f.reason) for f in b.failures
    ]


def test_same_items_embeddings_and_failures_as_threads(local_ray: None, tmp_path: Path) -> None:
    pool = _mixed_pool(tmp_path / "pool")
    threads = embed(str(pool), options=THREADS, cache=tmp_path / "c1")
    on_ray = embed(str(pool), options=RAY, cache=tmp_path / "c2")
    _same(threads, on_ray)
    assert on_ray.embedded == len(on_ray.items) == 16  # 14 PNGs, the JPEG and the WebP
    assert {f.uri.rsplit("/", 1)[1] for f in on_ray.failures} == {
        "corrupt.png",
        "empty.png",
        "text.jpg",
    }
    stats = on_ray.stages["ray"]
    assert stats["engine"] == "ray"
    assert stats["actors"] == 2
    assert stats["layout"] == "tasks"  # a local pool on CPUs: read where it is embedded
    assert stats["cluster"]["cpus"] == 2.0

    # A warm rerun through the CLI: everything from the cache, no image read, Ray not needed.
    from typer.testing import CliRunner

    out = CliRunner().invoke(
        app,
        [
            "embed",
            str(pool),
            "--engine",
            "ray",
            "--model",
            "mobilenet_v3_small",
            "--weights",
            "none",
            "--image-size",
            "32",
            "--cache-dir",
            str(tmp_path / "c2"),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert (summary["cached"], summary["embedded"], summary["failed"]) == (16, 0, 3)


@pytest.mark.s3
def test_s3_pool(local_ray: None, tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """Workers read through the sources' reader with the pool's storage options (endpoint)."""
    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for i, blob in enumerate(png_blobs(10, seed=5, size=20)):
        fs.pipe(f"{bucket}/imgs/{i:03d}.png", blob)
    fs.pipe(f"{bucket}/imgs/zz-corrupt.png", b"\x89PNG\r\n\x1a\nbroken")
    spec = f"s3://{bucket}/imgs/"
    threads = embed(spec, options=THREADS, cache=tmp_path / "c1", storage_options=options)
    on_ray = embed(spec, options=RAY_ONE, cache=tmp_path / "c2", storage_options=options)
    _same(threads, on_ray)
    assert on_ray.embedded == 10
    assert [f.uri for f in on_ray.failures] == [f"s3://{bucket}/imgs/zz-corrupt.png"]
    assert on_ray.stages["ray"]["layout"] == "split"  # reading tasks ahead of the actors


def test_actor_layout_reads_in_the_actor(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU layout (actors reading their own blocks), run on CPUs: the same results."""
    from alcli.pipeline import ray_engine

    monkeypatch.setattr(ray_engine, "layout_for", lambda local, gpus: "actors")
    pool = _mixed_pool(tmp_path / "pool", n=6)
    threads = embed(str(pool), options=THREADS, cache=tmp_path / "c1")
    on_ray = embed(str(pool), options=RAY_ONE, cache=tmp_path / "c2")
    _same(threads, on_ray)
    assert on_ray.stages["ray"]["layout"] == "actors"
    assert len(on_ray.failures) == 3


def test_worker_keeps_one_backbone_and_checks_its_fingerprint() -> None:
    """What a reused task worker does: one build per model settings, a new model replaces
    it, and a fingerprint that is not the driver's refuses to embed (exit 2 as ModelError)."""
    from alcli.errors import ModelError
    from alcli.models import load_backbone
    from alcli.pipeline import ray_workers
    from alcli.pipeline.ray_engine import layout_for, task_batches

    reference = load_backbone("mobilenet_v3_small", "none", 32)
    model = {
        "model": "mobilenet_v3_small",
        "weights": "none",
        "image_size": 32,
        "device": "cpu",
        "fingerprint": reference.fingerprint,
        "torch_threads": 1,
    }
    first = ray_workers.backbone_for(model)
    assert ray_workers.backbone_for(dict(model)) is first
    bigger = load_backbone("mobilenet_v3_small", "none", 48).fingerprint
    other = ray_workers.backbone_for({**model, "image_size": 48, "fingerprint": bigger})
    assert other is not first
    assert len(ray_workers._BACKBONE) == 1
    with pytest.raises(ModelError, match="fingerprint"):
        ray_workers.backbone_for({**model, "fingerprint": "0" * 64})
    ray_workers._BACKBONE.clear()

    assert (layout_for(True, 0.0), layout_for(True, 0.5), layout_for(False, 0.0)) == (
        "tasks",
        "actors",
        "split",
    )
    assert task_batches(40000, 64, 2) == 16  # sixteen batches a task on a large pool
    assert task_batches(2000, 64, 2) == 8
    assert task_batches(40, 4, 1) == 5
    assert task_batches(100, 64, 2) == 1  # never fewer than two tasks a worker, if it can


def test_task_embeds_its_block_a_batch_at_a_time(tmp_path: Path) -> None:
    """A ``read_and_embed`` task of several batches (read and embedded ``batch_size`` rows at
    a time) gives the rows, reasons and embeddings of the same block done in one piece."""
    from alcli.models import load_backbone
    from alcli.pipeline import ray_workers

    paths = write_pngs(tmp_path / "pool", 9, size=20)
    uris = [str(p) for p in paths] + [str(tmp_path / "pool" / "missing.png")]
    block = {
        "index": np.arange(len(uris), dtype=np.int64),
        "uri": np.asarray(uris, dtype=object),
    }
    model = {
        "model": "mobilenet_v3_small",
        "weights": "none",
        "image_size": 32,
        "device": "cpu",
        "fingerprint": load_backbone("mobilenet_v3_small", "none", 32).fingerprint,
        "torch_threads": 1,
    }
    common = {"model": model, "storage_options": {}, "timeout": None, "threads": 2}
    whole = ray_workers.read_and_embed(block, **common)
    pieces = ray_workers.read_and_embed(block, **common, batch_size=4)
    ray_workers._BACKBONE.clear()
    assert list(pieces["index"]) == list(whole["index"]) == list(range(10))
    assert list(pieces["reason"]) == list(whole["reason"])
    assert whole["reason"][9]
    assert not any(whole["reason"][:9])
    np.testing.assert_allclose(pieces["embedding"], whole["embedding"], rtol=1e-4, atol=1e-5)
    assert pieces["embedding"].shape == (10, whole["embedding"].shape[1])


def test_cancelled_then_resumed(local_ray: None, tmp_path: Path) -> None:
    """A stop mid-run keeps every batch that arrived; the rerun embeds only the rest:
    nothing embedded twice, nothing lost."""
    paths = write_pngs(tmp_path / "pool", 40, size=20)
    stop = threading.Event()
    seen = []

    def progress(n: int) -> None:
        seen.append(n)
        if sum(seen) >= 8:
            stop.set()

    first = embed(
        str(tmp_path / "pool"), options=RAY_ONE, cache=tmp_path / "c", progress=progress, stop=stop
    )
    assert 8 <= first.embedded < 40
    second = embed(str(tmp_path / "pool"), options=RAY_ONE, cache=tmp_path / "c")
    assert second.cached == first.embedded
    assert second.embedded == 40 - first.embedded
    assert [i.uri for i in second.items] == [str(p) for p in paths]
    reference = embed(str(tmp_path / "pool"), options=THREADS, cache=tmp_path / "ref")
    np.testing.assert_allclose(second.embeddings, reference.embeddings, rtol=1e-4, atol=1e-5)


def test_without_ray_installed_exits_2_with_one_line(tmp_path: Path) -> None:
    """A meta-path blocker hides ``ray`` from a fresh interpreter (sitecustomize)."""
    write_pngs(tmp_path / "pool", 2)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoRay())\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")]),
        "ALCLI_CACHE_DIR": str(tmp_path / "cache"),
    }
    # from the command line, then from alcli.toml (engine = "ray" in the working folder)
    (tmp_path / "alcli.toml").write_text('engine = "ray"\n')
    for extra, cwd in ((["--engine", "ray"], hide), ([], tmp_path)):
        done = subprocess.run(
            [sys.executable, "-m", "alcli", "embed", str(tmp_path / "pool"), *extra],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "pip install 'alcli[ray]'" in lines[0]
        assert "Traceback" not in done.stderr


def test_two_node_cluster(tmp_path: Path) -> None:
    """Two raylets on this machine (one CPU each), so the actors live on both nodes: the
    same results as the threads engine. Runs last: it replaces the module's local Ray."""
    from ray.cluster_utils import Cluster

    pool = _mixed_pool(tmp_path / "pool", n=10)
    threads = embed(str(pool), options=THREADS, cache=tmp_path / "c1")
    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        on_ray = embed(str(pool), options=RAY, cache=tmp_path / "c2")
        _same(threads, on_ray)
        assert on_ray.stages["ray"]["cluster"]["nodes"] == 2
        assert on_ray.embedded == 12
    finally:
        ray.shutdown()
        cluster.shutdown()
