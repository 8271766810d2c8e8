"""The embed API's glue: warm runs serve the cache, fingerprints are remembered safely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

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
    assert first == model_fingerprint("resnet18", "none", None)
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
