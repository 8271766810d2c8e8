"""Where the cache lives on disk, and the folder layout under it.

Layout under the cache directory: ``manifests/`` (``resolve_pool``'s memo of large manifests),
``embeddings/meta/`` (the diskcache index, ``cache.db``) and
``embeddings/segments/<fingerprint>/*.seg``. A fingerprint names a folder, so it is checked
before it is joined to a path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

FINGERPRINT = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def default_cache_dir() -> Path:
    """Where embeddings live: $ALCLI_CACHE_DIR, else $XDG_CACHE_HOME/alcli, else ~/.cache/alcli."""
    explicit = os.environ.get("ALCLI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "alcli"
    return Path.home() / ".cache" / "alcli"


def manifest_memo_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where ``resolve_pool`` remembers large manifests' items, inside the cache folder."""
    return (Path(directory) if directory is not None else default_cache_dir()) / "manifests"


def check_fingerprint(fingerprint: str) -> None:
    """Refuse a fingerprint that is not a plain name (it becomes a folder: no ``../etc``)."""
    if not isinstance(fingerprint, str) or not FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(
            f"model fingerprint {fingerprint!r} is not a hex string; "
            "pass the fingerprint that alcli.models computes"
        )


class Layout:
    """The embedding store's paths, in one place: ``root`` is ``<cache>/embeddings``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / "meta"
        self.segments = root / "segments"

    @property
    def index_path(self) -> Path:
        """The SQLite file that lists each fingerprint's segments (diskcache's cache.db)."""
        return self.meta / "cache.db"

    @property
    def meta_lock(self) -> Path:
        """Held while a damaged index is set aside, so two processes do not both replace it."""
        return self.root / "meta.lock"

    def segment_dir(self, fingerprint: str) -> Path:
        return self.segments / fingerprint

    def segment_path(self, fingerprint: str, name: str) -> Path:
        return self.segments / fingerprint / name

    def segment_names(self, fingerprint: str) -> list[str]:
        """The fingerprint's folder listing, sorted (name order is write order); [] if none."""
        try:
            return sorted(os.listdir(self.segment_dir(fingerprint)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def fingerprint_dirs(self) -> list[str]:
        """Fingerprints that have a segment folder on disk, sorted."""
        if not self.segments.is_dir():
            return []
        return [p.name for p in sorted(self.segments.iterdir()) if _is_fingerprint_dir(p)]

    def delete(self, fingerprint: str, names: Iterable[str]) -> None:
        for name in names:
            self.segment_path(fingerprint, name).unlink(missing_ok=True)


def _is_fingerprint_dir(path: Path) -> bool:
    return path.is_dir() and FINGERPRINT.fullmatch(path.name) is not None
