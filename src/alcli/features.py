"""Your own features: embeddings computed elsewhere (CLIP, DINOv2, a fine-tuned model) put
into the cache under a name, so ``select`` and ``auto`` use them like alcli's own.

``alcli embed --from-npy EMB.npy --uris URIS.txt --fingerprint NAME`` (or ``--from-parquet
FILE`` with a ``uri`` column and an embedding column) stores row i under the cache key of the
i-th URI: the same key a pool listing gives that item (its cheap metadata, or its content
with ``--content-hash``), so ``alcli select POOL --model features:NAME`` finds them. A name
maps to a fingerprint by a digest (``features_fingerprint``), in its own namespace: no
torchvision model's fingerprint can collide with it. Pool items without imported features
are skipped with that reason (never embedded by a model that would give other numbers).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.errors import UsageError

#: ``--model features:NAME`` selects imported features instead of a backbone.
PREFIX = "features:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Rows stored per cache write: bounds the memory of importing a memory-mapped array.
CHUNK_ROWS = 65536


def is_features(model: str) -> bool:
    return model.startswith(PREFIX)


def features_name(model: str) -> str:
    """NAME of ``features:NAME``, checked."""
    return check_name(model[len(PREFIX) :])


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"features name {name!r} must be 1-64 letters, digits, '_', '.' or '-'",
            hint="e.g. --fingerprint clip-vit-b32",
        )
    return name


def features_fingerprint(name: str) -> str:
    """The cache fingerprint of the features called ``name`` (hex, like a model's)."""
    blob = f"alcli-imported-features:{check_name(name)}".encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def missing_reason(name: str) -> str:
    return f"no imported features {name!r} (alcli embed --from-npy ... --fingerprint {name})"


@dataclass
class Imported:
    """What ``import_features`` stored: counts for ``alcli embed --json``."""

    name: str
    fingerprint: str
    rows: int
    stored: int
    dim: int
    skipped: dict[str, str]
    duplicates: int

    def summary(self) -> dict[str, Any]:
        return {
            "features": self.name,
            "fingerprint": self.fingerprint,
            "rows": self.rows,
            "stored": self.stored,
            "dim": self.dim,
            "skipped": len(self.skipped),
            "skipped_items": [{"uri": u, "reason": r} for u, r in self.skipped.items()],
            "duplicates": self.duplicates,
        }


def load_npy(path: str, uris_path: str | None) -> tuple[list[str], NDArray[Any]]:
    """(uris, rows) of an ``.npy`` array (memory-mapped) and its URI list."""
    if uris_path is None:
        raise UsageError("--from-npy needs --uris: one URI per row of the array")
    from alcli.labels import read_uri_list

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--from-npy: file not found: {path}") from None
    except ValueError as exc:
        raise UsageError(f"--from-npy: not a .npy array file: {path} ({exc})") from None
    uris = read_uri_list(uris_path)
    return uris, _checked(array, len(uris), path)


def load_parquet(path: str, column: str) -> tuple[list[str], NDArray[Any]]:
    """(uris, rows) of a parquet file's ``uri`` column and list/fixed-size-list ``column``."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            "--from-parquet needs pyarrow, which is not installed",
            hint="pip install 'alcli[parquet]' (or pyarrow), or export .npy + a URI list",
        ) from None
    from alcli.sources import normalize_uri

    try:
        table = pq.read_table(path, columns=["uri", column])
    except FileNotFoundError:
        raise UsageError(f"--from-parquet: file not found: {path}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"--from-parquet: {path}: {str(exc).splitlines()[0]}") from None
    uris = [normalize_uri(str(u)) for u in table.column("uri").to_pylist()]
    values = table.column(column).combine_chunks()
    try:
        flat = np.asarray(values.flatten().to_numpy(zero_copy_only=False))
        array = flat.reshape(len(values), -1) if len(values) else flat.reshape(0, 0)
    except (AttributeError, ValueError) as exc:
        raise UsageError(
            f"--from-parquet: column {column!r} is not a list of numbers of one length ({exc})"
        ) from None
    return uris, _checked(array, len(uris), path)


def _checked(array: NDArray[Any], n_uris: int, path: str) -> NDArray[Any]:
    if array.ndim != 2 or array.shape[1] == 0:
        raise UsageError(f"{path}: expected a 2-D array [rows, dim], got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise UsageError(f"{path}: expected numbers, got dtype {array.dtype}")
    if array.shape[0] != n_uris:
        raise UsageError(f"{path} has {array.shape[0]:,} rows but {n_uris:,} URIs are given")
    return array


def import_features(
    name: str,
    uris: Sequence[str],
    embeddings: NDArray[Any],
    *,
    cache_dir: str | None = None,
    content_hash: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Imported:
    """Store ``embeddings`` (row i for ``uris[i]``) in the cache as features ``name``.

    The URIs are resolved like a pool (``resolve_pool`` of them as a manifest), so each row
    lands under the key the pool's listing gives that item; URIs that cannot be stat'ed are
    skipped with their reason, duplicates keep their first row, a non-finite row is an error.
    """
    from alcli.cache import EmbeddingCache
    from alcli.embedding import resolve

    fingerprint = features_fingerprint(name)
    if any("\n" in uri or "\r" in uri for uri in uris):
        raise UsageError("a URI holds a line break; such names cannot be listed as a manifest")
    store = EmbeddingCache(cache_dir)
    store.check_writable()
    row_of: dict[str, int] = {}
    for row, uri in enumerate(uris):
        row_of.setdefault(uri, row)
    pool = resolve(
        "-",
        cache_dir=store.directory,
        content_hash=content_hash,
        storage_options=storage_options,
        stdin=io.StringIO("".join(f"{uri}\n" for uri in uris)),
    )
    skipped = dict(pool.unreadable)
    usable = [item for item in pool.items if not item.unreadable and item.uri in row_of]
    stored = 0
    for chunk in _chunks(usable):
        rows = np.array([row_of[item.uri] for item in chunk], dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # ascending reads of a memory-mapped file
        block = np.asarray(embeddings[rows[order]], dtype=np.float32)
        if not np.isfinite(block).all():
            bad = int(rows[order][np.flatnonzero(~np.isfinite(block).all(axis=1))[0]])
            raise UsageError(f"row {bad} ({uris[bad]}) holds NaN or inf; fix or drop it")
        store.store(fingerprint, [chunk[i].key for i in order], block)
        stored += len(chunk)
    if stored:
        store.compact(fingerprint)
    return Imported(
        name=name,
        fingerprint=fingerprint,
        rows=len(uris),
        stored=stored,
        dim=int(embeddings.shape[1]),
        skipped=skipped,
        duplicates=len(uris) - len(row_of),
    )


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK_ROWS):
        yield items[start : start + CHUNK_ROWS]
