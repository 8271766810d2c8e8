"""Writers of small real images and of broken files, shared by tests and benchmarks.

Plain functions (no pytest), importable as ``from helpers import write_pngs`` in tests (pytest
puts ``tests/`` on ``sys.path``) and by path from benchmarks, like ``s3server.py``.
Pixel content comes from a seeded ``numpy.random.Generator``, so the same call writes the
same bytes on every run and every image differs from the others.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(rng: np.random.Generator, size: int = 16) -> bytes:
    """One RGB PNG of ``size`` x ``size`` random pixels drawn from ``rng``."""
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_blobs(n: int, *, seed: int = 0, size: int = 16) -> list[bytes]:
    """``n`` distinct PNGs as bytes, e.g. to upload to a bucket."""
    rng = np.random.default_rng(seed)
    return [png_bytes(rng, size) for _ in range(n)]


def write_pngs(
    root: Path,
    n: int,
    *,
    seed: int = 0,
    size: int = 16,
    nested: bool = False,
    prefix: str = "img",
) -> list[Path]:
    """Write ``n`` PNGs under ``root`` and return their paths in sorted order.

    ``nested=True`` spreads them over ``root``, ``root/a`` and ``root/a/b`` so recursive
    listing is exercised.
    """
    folders = [root, root / "a", root / "a" / "b"] if nested else [root]
    paths = []
    for index, data in enumerate(png_blobs(n, seed=seed, size=size)):
        folder = folders[index % len(folders)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{prefix}{index:05d}.png"
        path.write_bytes(data)
        paths.append(path)
    return sorted(paths, key=str)


def write_corrupt_png(path: Path) -> Path:
    """A file that starts like a PNG but is cut short: decoding it must fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG_SIGNATURE + b"\x00\x00\x00\rIHDR\x00\x00")
    return path


def write_empty_file(path: Path) -> Path:
    """A zero-byte file (with whatever extension ``path`` has)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_file(path: Path, text: str = "this is not an image\n") -> Path:
    """A text file, typically under an image extension, to test 'not an image' handling."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_broken_images(folder: Path) -> dict[str, Path]:
    """One of each broken kind under ``folder``: ``corrupt``, ``empty`` and ``text``."""
    return {
        "corrupt": write_corrupt_png(folder / "corrupt.png"),
        "empty": write_empty_file(folder / "empty.png"),
        "text": write_text_file(folder / "text.jpg"),
    }
