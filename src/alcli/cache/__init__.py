"""The embedding cache: rows in append-only segment files, their manifests in diskcache.

A package, one concept per module (docs/ARCHITECTURE.md, "cache/"): ``paths`` (where it
lives), ``keys`` (key encoding, the in-memory key index), ``segments`` (the file format),
``manifest`` and ``database`` and ``index`` (the diskcache index, its healing), ``orphans``
(files an interrupted run left), ``integrity`` (checks, verify), ``reader``, ``writer`` and
``compaction``, and ``store`` (``EmbeddingCache``, the facade over them).
"""

from alcli.cache.paths import default_cache_dir, manifest_memo_dir
from alcli.cache.store import EmbeddingCache

__all__ = ["EmbeddingCache", "default_cache_dir", "manifest_memo_dir"]
