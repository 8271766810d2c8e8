"""MNIST as a real image pool, embedded once by alcli and cached: shared by the benchmarks.

Pool = the 50,000 training digits, eval = the 10,000 test digits, written as PNGs by
``examples/mnist_pool.py`` and embedded by ``alcli.embedding.embed`` with MobileNetV2
(ImageNet weights) at 112 px. The first call takes about ten minutes on 2 cores; later calls
read the cache (``benchmarks/.work/cache`` unless ``ALCLI_CACHE_DIR`` is set).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
sys.path.insert(0, str(ROOT))

from examples.mnist_pool import make_pools  # noqa: E402

from alcli.embedding import EmbedOptions, embed  # noqa: E402
from alcli.oracle import load_labels_csv  # noqa: E402

IMAGE_SIZE = 112


@dataclass
class Features:
    """Embeddings and labels of one split, rows in file order."""

    uris: list[str]
    X: np.ndarray
    y: np.ndarray


def mnist_features(
    train: int = 50_000,
    test: int = 10_000,
    *,
    precision: str = "fp32",
    cache: Path | None = None,
) -> tuple[Features, Features]:
    """(pool, eval) features; embeds whatever the cache lacks, with progress on stderr.

    ``precision`` (``EmbedOptions.precision``): fp32, the features every benchmark shares;
    issue 14's agreement check embeds bf16 ones into its own ``cache``."""
    cache = cache or Path(os.environ.get("ALCLI_CACHE_DIR", WORK / "cache"))
    pools = make_pools(WORK / "mnist", train=train, test=test)
    out = []
    for split in ("train", "test"):
        pool = pools[split]
        started = time.perf_counter()
        result = embed(
            str(pool.directory),
            options=EmbedOptions(image_size=IMAGE_SIZE, precision=precision),
            cache=cache,
        )
        print(
            f"mnist {split}: {len(result.items)} items, {result.embedded} embedded in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        labels = load_labels_csv(pool.labels_csv)
        y = np.array([int(labels[u]) for u in result.uris], dtype=np.int64)
        out.append(Features(result.uris, result.embeddings, y))
    return out[0], out[1]
