"""MNIST features in fp32 and bf16 for issue 14's agreement check: a subset, same items both ways.

The pool's first ``--train`` training digits and first ``--test`` test digits (file order), as
``alcli.embedding.embed`` gives them with MobileNetV2 at 112 px: fp32 from the shared feature
cache (``mnist_features.py``'s, warm), bf16 (``--precision bf16``) into
``benchmarks/.work/cache-i14-bf16``. A subset because the machine embeds at a few images/s
when every helper shares its 2 cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alcli.embedding import EmbedOptions, embed
from alcli.oracle import load_labels_csv
from alcli.sources import resolve_pool
from mnist_features import IMAGE_SIZE, WORK, Features

CACHES = {"fp32": WORK / "cache", "bf16": WORK / "cache-i14-bf16"}


def features(split: str, n: int, precision: str) -> Features:
    """The first ``n`` digits of ``split`` embedded at ``precision``."""
    folder = WORK / "mnist" / split
    files = sorted(os.listdir(folder))[:n]
    manifest = WORK / f"i14-{split}-{n}.txt"
    manifest.write_text("".join(f"{folder / name}\n" for name in files))
    pool = resolve_pool(str(manifest))
    options = EmbedOptions(image_size=IMAGE_SIZE, precision=precision)
    result = embed(pool, options=options, cache=CACHES[precision])
    by_name = {
        Path(uri).name: label
        for uri, label in load_labels_csv(WORK / "mnist" / f"{split}_labels.csv").items()
    }
    y = np.array([int(by_name[Path(u).name]) for u in result.uris], dtype=np.int64)
    return Features(result.uris, np.asarray(result.embeddings), y)


if __name__ == "__main__":
    for precision in ("bf16", "fp32"):
        for split, n in (("train", int(sys.argv[1])), ("test", int(sys.argv[2]))):
            got = features(split, n, precision)
            print(precision, split, got.X.shape, file=sys.stderr, flush=True)
