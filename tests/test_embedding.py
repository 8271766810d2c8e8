"""The embed API's glue: warm runs serve the cache, fingerprints are remembered safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alcli.embedding import EmbedOptions, cached_fingerprint, embed
from alcli.models import model_fingerprint

TINY = EmbedOptions(model="mobilenet_v3_small", weights="none", image_size=32, batch_size=4)


def test_warm_run_reads_no_image_and_matches_cold(png_pool, tmp_path: Path) -> None:
    paths = png_pool(6)
    cold = embed(str(tmp_path / "pool"), options=TINY, cache=tmp_path / "cache")
    assert (cold.embedded, cold.cached) == (6, 0)
    for path in paths:  # a warm run must not read the bytes: garble them, keeping the key
        info = path.stat()
        path.write_bytes(b"\0" * info.st_size)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    warm = embed(str(tmp_path / "pool"), options=TINY, cache=tmp_path / "cache")
    assert (warm.embedded, warm.cached, len(warm.failures)) == (0, 6, 0)
    np.testing.assert_array_equal(np.asarray(warm.embeddings), cold.embeddings)
    assert warm.uris == [str(p) for p in paths]


def test_fingerprint_memo_matches_and_follows_checkpoint_changes(tmp_path: Path) -> None:
    options = EmbedOptions(model="resnet18", weights="none")
    first = cached_fingerprint(options, tmp_path)
    assert first == model_fingerprint("resnet18", "none", None, numerics=options.numerics())
    assert first in json.loads((tmp_path / "fingerprints.json").read_text()).values()
    assert cached_fingerprint(options, tmp_path) == first
    other = EmbedOptions(model="resnet18", weights="none", image_size=64)
    assert cached_fingerprint(other, tmp_path) != first
    (tmp_path / "fingerprints.json").write_text("{not json")  # a damaged memo is recomputed
    assert cached_fingerprint(options, tmp_path) == first


def test_warm_path_never_imports_torch(png_pool, tmp_path: Path) -> None:
    png_pool(2)
    embed(str(tmp_path / "pool"), options=TINY, cache=tmp_path / "cache")
    code = (
        "import sys; from alcli.embedding import embed, EmbedOptions;"
        f"r = embed({str(tmp_path / 'pool')!r}, options=EmbedOptions(model='mobilenet_v3_small',"
        f" weights='none', image_size=32), cache={str(tmp_path / 'cache')!r});"
        "print(r.cached, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]


def test_the_model_builds_while_the_first_images_are_read(
    png_pool, tmp_path: Path, monkeypatch
) -> None:
    """The build waits for a read to happen: it can only finish if reads start without it."""
    import threading

    from alcli import models, sources

    png_pool(8)
    first_read = threading.Event()
    real_read, real_load = sources.Pool.read, models.load_backbone

    def read(self: sources.Pool, uri: str, **kwargs: object) -> bytes:
        first_read.set()
        return real_read(self, uri, **kwargs)

    def load(*args: object, **kwargs: object) -> models.Backbone:
        assert first_read.wait(30), "no image was read while the model was being built"
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sources.Pool, "read", read)
    monkeypatch.setattr(models.background, "load_backbone", load)  # what the builder calls
    result = embed(str(tmp_path / "pool"), options=TINY, cache=tmp_path / "cache")
    assert (result.embedded, len(result.failures)) == (8, 0)
    assert result.embeddings.shape == (8, 1024)  # mobilenet_v3_small


def test_a_model_that_cannot_be_built_is_a_model_error(png_pool, tmp_path: Path) -> None:
    """Not "the infer stage failed": the build's own one-line error, exit code 2."""
    import torch
    import torchvision

    from alcli.errors import ModelError

    png_pool(3)
    other = tmp_path / "other.pt"
    torch.save(torchvision.models.get_model("shufflenet_v2_x0_5").state_dict(), other)
    options = EmbedOptions(model="resnet18", weights=str(other), image_size=32, batch_size=2)
    with pytest.raises(ModelError, match="does not fit resnet18") as caught:
        embed(str(tmp_path / "pool"), options=options, cache=tmp_path / "cache")
    assert caught.value.exit_code == 2


def test_every_item_bad_still_gives_the_models_width(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.png").write_bytes(b"not a png")
    result = embed(str(pool), options=TINY, cache=tmp_path / "cache")
    assert result.embeddings.shape == (0, 1024)
    assert len(result.failures) == 1


def test_the_background_build_leaves_torchs_thread_count_alone(png_pool, tmp_path: Path) -> None:
    """The build runs on one torch thread; the pipeline must still size the model by the
    count the caller had. Called from a thread of its own (as ``alcli bench`` does), where
    torch's count is that thread's: a build started first made the pipeline read one."""
    import threading

    png_pool(4)
    seen: list[tuple[int, int]] = []

    def run(attempt: int) -> None:
        import torch

        torch.set_num_threads(2)
        result = embed(str(tmp_path / "pool"), options=TINY, cache=tmp_path / f"c{attempt}")
        used = result.stages["torch_threads"] * result.stages["model_streams"]
        seen.append((used, torch.get_num_threads()))

    for attempt in range(3):
        worker = threading.Thread(target=run, args=(attempt,))
        worker.start()
        worker.join(120)
    assert seen == [(2, 2)] * 3


def test_read_threads_follow_where_the_pool_lives() -> None:
    from alcli.embedding import LOCAL_IO_THREADS, REMOTE_IO_THREADS, read_threads

    assert read_threads(None, ["/data/a.png", "file:///data/b.png"]) == LOCAL_IO_THREADS
    assert read_threads(None, ["/data/a.png", "s3://bucket/b.png"]) == REMOTE_IO_THREADS
    assert read_threads(7, ["/data/a.png"]) == 7  # asked for: kept


def test_a_local_pool_is_read_with_the_local_thread_count(png_pool, tmp_path: Path) -> None:
    from alcli.embedding import LOCAL_IO_THREADS

    png_pool(5)
    result = embed(str(tmp_path / "pool"), options=TINY, cache=tmp_path / "cache")
    assert result.stages["stages"]["prefetch"]["threads"] == LOCAL_IO_THREADS
    build = result.stages["model_build"]  # how long it took, and what it did not hide
    assert build["seconds"] > 0
    assert 0 <= build["waited_s"] <= build["seconds"] + 0.05


def test_unreadable_items_are_skipped_never_cached_and_heal_when_fixed(
    png_pool, tmp_path: Path
) -> None:
    """A dangling link is a failure at its pool position with resolving's reason; its
    'unreadable-' key reaches neither the cache nor the pipeline, and fixing the link makes
    the next run embed it (no stale failure remembered)."""
    from alcli.cache import EmbeddingCache
    from helpers import png_bytes, write_corrupt_png

    paths = png_pool(3)
    root = tmp_path / "pool"
    late = root / "img00001b.png"  # sorts between the good images: position 2
    late.symlink_to("later.bin")  # not an image name: the link is the only item
    write_corrupt_png(root / "zz.png")  # a pipeline failure after it: position 4
    cold = embed(str(root), options=TINY, cache=tmp_path / "cache")
    assert [(f.index, f.uri, f.reason[:13]) for f in cold.failures] == [
        (2, str(late), "not found (da"),
        (4, str(root / "zz.png"), "corrupt image"),
    ]
    assert cold.uris == [str(p) for p in paths]
    assert (cold.embedded, cold.cached) == (3, 0)
    with EmbeddingCache(tmp_path / "cache") as cache:
        [stats] = cache.stats().values()
    assert (stats["items"], stats["failures"]) == (3, 1)  # the corrupt image is remembered

    (root / "later.bin").write_bytes(png_bytes(np.random.default_rng(7)))
    healed = embed(str(root), options=TINY, cache=tmp_path / "cache")
    assert (healed.embedded, healed.cached) == (1, 3)
    assert [f.uri for f in healed.failures] == [str(root / "zz.png")]
    assert healed.uris == [str(paths[0]), str(paths[1]), str(late), str(paths[2])]


class GatherWatch:
    """Wraps the real cache's ``lookup`` to keep what it gathered (its [n, D] answers)."""

    def __init__(self, directory: Path) -> None:
        from alcli.cache import EmbeddingCache

        self.cache = EmbeddingCache(directory)
        self.gathered: list[np.ndarray] = []
        real_lookup = self.cache.lookup

        def lookup(fingerprint: str, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
            vectors, found = real_lookup(fingerprint, keys)
            self.gathered.append(vectors)
            return vectors, found

        self.cache.lookup = lookup  # type: ignore[method-assign]


def counts(summary: dict) -> dict:
    """An ``embed --json`` summary without its timings."""
    return {k: v for k, v in summary.items() if k not in ("seconds", "items_per_s", "stages")}


def test_counts_only_embed_gathers_no_row_and_reports_the_same(png_pool, tmp_path: Path) -> None:
    """``alcli embed`` prints counts: ``collect=False`` asks the cache which items it has and
    never for their rows (memory flat in the pool), and reports what a collecting run does."""
    from helpers import write_corrupt_png

    png_pool(6)
    root = tmp_path / "pool"
    write_corrupt_png(root / "img00002b.png")
    watch = GatherWatch(tmp_path / "cache")
    cold = embed(str(root), options=TINY, cache=watch.cache, collect=False)
    warm = embed(str(root), options=TINY, cache=watch.cache, collect=False)
    assert watch.gathered == []
    for result in (cold, warm):
        assert result.items == []
        assert result.embeddings.shape[0] == 0
    collected_cold = embed(str(root), options=TINY, cache=tmp_path / "other")
    collected_warm = embed(str(root), options=TINY, cache=tmp_path / "cache")
    assert counts(cold.summary()) == counts(collected_cold.summary())
    assert counts(warm.summary()) == counts(collected_warm.summary())
    assert (warm.cached, warm.embedded, len(warm.failures), warm.dim) == (6, 0, 1, 1024)


def test_a_remembered_bad_item_makes_a_warm_run_copy_the_embeddings_once(
    png_pool, tmp_path: Path
) -> None:
    """The cache gathers the pool's rows once (a bad item breaks its zero-copy run); the
    usable ones are returned from that array, not copied a second time."""
    from helpers import write_corrupt_png

    png_pool(9)
    root = tmp_path / "pool"
    write_corrupt_png(root / "img00002b.png")
    cold = embed(str(root), options=TINY, cache=tmp_path / "cache")
    watch = GatherWatch(tmp_path / "cache")
    warm = embed(str(root), options=TINY, cache=watch.cache)
    assert (warm.cached, len(warm.failures)) == (9, 1)
    [gathered] = watch.gathered
    assert gathered.shape[0] == 10
    assert np.shares_memory(warm.embeddings, gathered)
    np.testing.assert_array_equal(warm.embeddings, cold.embeddings)
    assert warm.uris == cold.uris
