"""The pool's kNN graph kept on disk, so the next ``select --head graph`` on that pool reuses it.

The graph is the expensive part of a graph head to get (16 s at 50k items exact on 2 cores,
2.5 min at 1M with faiss HNSW; loading it back: 0.2 s and 5 s, measured in RESULTS.md, issue
18, session 10) and depends on the embeddings alone, not on the labels; yet each ``alcli
select`` is a new process. So it is stored under ``<cache>/graphs/`` next to the
embeddings (``alcli.cache``), one ``.npz`` per graph, named by what determines it: a SHA-256
digest of the embeddings' float32 bytes in row order (the content, whichever way the rows
came: the embedding cache, a user's ``.npy``), ``k``, ``dim``, the backend actually used,
the scaler (when the caller brings one) and ``FORMAT_VERSION``. The name is stored in the file
too and checked on load.

Never fatal: a file that cannot be read, or whose key or shapes do not match, is rebuilt and
replaced; a cache folder that cannot be written is skipped (the graph is still returned).
Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a reader
sees the old file or the new one, never half of one. The ``MAX_FILES`` most recently used
graphs are kept; older ones are deleted as a new one is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.learner.graph import DEFAULT_DIM, DEFAULT_K, PoolGraph, build_graph, choose_backend
from alcli.learner.heads import Scaler

#: Bumped when what a file holds, or how a graph is built, changes: old files are not read.
FORMAT_VERSION = 1
#: Graph files kept in the folder, the most recently used (a 1M-item graph is 0.55 GiB).
MAX_FILES = 8
#: Rows hashed per block (64 MiB of float32 at 1280 columns): bounded memory.
DIGEST_BLOCK_ROWS = 16_384
_ARRAYS = ("neighbors", "weights", "axes", "points", "mean", "scale")


def graph_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where graphs live: ``<cache_dir>/graphs``, the embedding cache's folder by default."""
    from alcli.cache.paths import default_cache_dir

    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "graphs"


def content_digest(X: Any, block_rows: int = DIGEST_BLOCK_ROWS) -> str:
    """SHA-256 of the rows' float32 bytes in order, and the shape, a block at a time."""
    arr = np.asarray(X) if not hasattr(X, "shape") else X
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    for start in range(0, arr.shape[0], block_rows):
        part = np.ascontiguousarray(arr[start : start + block_rows], dtype=np.float32)
        digest.update(part.data)
    return digest.hexdigest()


def graph_key(digest: str, *, k: int, dim: int, backend: str, scaler: Scaler | None = None) -> str:
    """The file name's stem for a graph of embeddings with content ``digest``."""
    parts = f"v{FORMAT_VERSION}-{digest}-k{k}-d{dim}-{backend}"
    if scaler is not None:
        given = hashlib.sha256(scaler.mean.tobytes() + scaler.scale.tobytes()).hexdigest()
        parts += f"-s{given[:16]}"
    return hashlib.sha256(parts.encode()).hexdigest()[:40]


def cached_graph(
    X: NDArray[Any],
    *,
    directory: str | os.PathLike[str] | None,
    k: int = DEFAULT_K,
    dim: int = DEFAULT_DIM,
    backend: str = "auto",
    scaler: Scaler | None = None,
) -> PoolGraph:
    """``build_graph(X, ...)``, read from ``directory`` when built before, else built and saved.

    ``directory`` None: no disk cache (built every call). The returned graph's ``cached``
    says which; its ``seconds`` are this call's (the load, or the build).
    """
    if directory is None:
        return build_graph(X, k=k, dim=dim, backend=backend, scaler=scaler)
    started = time.perf_counter()
    n = int(X.shape[0])
    resolved = choose_backend(backend, n)  # the key names the backend that builds it
    k_eff = max(1, min(k, n - 1))
    dim_eff = max(1, min(dim, int(X.shape[1])))
    key = graph_key(content_digest(X), k=k_eff, dim=dim_eff, backend=resolved, scaler=scaler)
    path = Path(directory) / f"graph-{key}.npz"
    graph = _load(path, key, n, scaler)
    if graph is not None:
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: kept by the pruning below
        return _with(graph, seconds=time.perf_counter() - started, cached=True)
    graph = build_graph(X, k=k_eff, dim=dim_eff, backend=resolved, scaler=scaler)
    _save(path, key, graph)
    return _with(graph, seconds=time.perf_counter() - started, cached=False)


def _with(graph: PoolGraph, *, seconds: float, cached: bool) -> PoolGraph:
    from dataclasses import replace

    return replace(graph, seconds=seconds, cached=cached)


def _load(path: Path, key: str, n: int, scaler: Scaler | None) -> PoolGraph | None:
    """The graph in ``path`` if it is whole and is ``key``'s; None (rebuild) otherwise."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key or any(name not in data for name in _ARRAYS):
                return None
            arrays = {name: np.asarray(data[name]) for name in _ARRAYS}
            sigma, backend = float(data["sigma"]), str(data["backend"])
    except Exception:  # a damaged file of any kind (zip, header, pickle) is rebuilt
        return None
    neighbors, weights, points = arrays["neighbors"], arrays["weights"], arrays["points"]
    if (
        neighbors.ndim != 2
        or neighbors.shape[0] != n
        or weights.shape != neighbors.shape
        or points.shape[0] != n
        or points.shape[1] != arrays["axes"].shape[1]
        or (neighbors.size and not 0 <= int(neighbors.min()) <= int(neighbors.max()) < n)
    ):
        return None
    return PoolGraph(
        neighbors=neighbors.astype(np.int64, copy=False),
        weights=weights.astype(np.float32, copy=False),
        scaler=scaler or Scaler(mean=arrays["mean"], scale=arrays["scale"]),
        axes=arrays["axes"].astype(np.float32, copy=False),
        points=points.astype(np.float32, copy=False),
        sigma=sigma,
        backend=backend,
        seconds=0.0,
    )


def _save(path: Path, key: str, graph: PoolGraph) -> None:
    """Write atomically; a folder that cannot be written only loses the cache."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        index = np.int32 if graph.neighbors.shape[0] < 2**31 else np.int64
        np.savez(
            tmp,
            key=np.array(key),
            neighbors=graph.neighbors.astype(index),
            weights=graph.weights,
            axes=graph.axes,
            points=graph.points,
            mean=graph.scaler.mean,
            scale=graph.scaler.scale,
            sigma=np.array(graph.sigma),
            backend=np.array(graph.backend),
        )
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    """Delete all but the ``MAX_FILES`` most recently used graph files (and stale temp files)."""
    keep = MAX_FILES
    with contextlib.suppress(OSError):
        files = sorted(folder.glob("graph-*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in files[keep:]:
            old.unlink(missing_ok=True)
        stale = time.time() - 86_400  # a writer killed mid-write a day ago left these
        for tmp in folder.glob(".graph-*.tmp.npz"):
            if tmp.stat().st_mtime < stale:
                tmp.unlink(missing_ok=True)
