"""The pool's k-nearest-neighbour graph, and the embeddings smoothed over it (the ``graph`` head).

A team buys few labels, but the whole pool is embedded. The graph turns that unlabeled pool
into accuracy without a label: each item's embedding is mixed with the weighted mean of its k
nearest neighbours', x' = (1 − β)·x + β·Σ_j w_j·x_j, and an ordinary logistic head is trained
on x'. This is one step of simplified graph convolution (Wu et al., Simplifying Graph
Convolutional Networks, ICML 2019, arXiv:1902.07153) on a kNN graph of the embeddings: the
feature-space twin of label spreading (Zhou et al., Learning with Local and Global
Consistency, NIPS 2003), which smooths the labels over the same graph instead. Measured on
MNIST features (benchmarks/RESULTS.md, issue 18): label spreading alone gains most at 100
labels but saturates near the graph's own neighbour-label agreement (~0.89 accuracy, 90.6 %
of neighbours share the label), while a logistic head on smoothed embeddings keeps the
head's capacity and gains 2-3 points from 200 to 400 labels; so the ``graph`` head smooths
features (since session 7 it reads each row next to its neighbours' mean, β = 1, rather than
a fixed mix: ``alcli.learner.semisup``). The graph depends on the embeddings only, not on
the labels, so it is built once per pool and reused by every round and strategy.

Neighbours are found on the standardized embeddings projected on their top ``dim`` principal
axes (fitted on at most ``PCA_ROWS`` evenly spaced rows) and L2-normalised: cosine similarity
in that space. Weights: exp(−(1 − s)/σ), σ the median distance 1 − s over all edges,
normalised per row.

Backends (``--graph-backend``; ``GRAPH_BACKENDS``): ``exact`` (blocked matrix products and a
partial sort in numpy; ties to the lower row) costs O(n²·dim); ``faiss`` and ``usearch``
search an approximate HNSW index (Malkov & Yashunin, TPAMI 2018, arXiv:1603.09320) from those
packages (the ``graph`` extra), O(n log n). Measured on MNIST features, 2 busy cores
(benchmarks/RESULTS.md, issue 18, session 10): exact 4.7 s at 20k rows, 16.5 s at 50k and
~2.7 h at 1M (extrapolated from measured blocks); faiss 1.9 s, 5.2 s and 145 s; usearch
3.1 s, 9.7 s and 335 s; recall@10 against exact 0.999 for both. ``auto`` (the default) takes
exact up to ``EXACT_MAX_ROWS`` items and the first installed HNSW library above. Every
backend is deterministic: the same embeddings give the same graph. The HNSW indexes are built
on one thread, since insertions racing on several threads change the graph (measured:
usearch with 2 threads gave different neighbours for 0.8 % of rows of the same input), and
searched on all of them (a search does not change the index). ``alcli.learner.graph_cache``
keeps a pool's graph on disk.
"""

from __future__ import annotations

import difflib
import importlib.util
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alcli.errors import UsageError
from alcli.learner.heads import Scaler, fit_scaler

#: Neighbours per item. 10 on MNIST features: 90.6 % share the item's label.
DEFAULT_K = 10
#: Principal axes the neighbour search runs in: cost falls with dim, and 128 kept 98.8 % of
#: the full 1280-dim graph's neighbour-label agreement on MNIST (0.895 vs 0.906).
DEFAULT_DIM = 128
#: Default weight of the neighbours' mean in ``smooth_pool``/``smooth_new`` (0.5 beat 1.0 from
#: 400 labels on, as a mix; the graph head now concatenates the row and the mean instead).
DEFAULT_SMOOTH = 0.5
#: Rows the principal axes are fitted on (evenly spaced): enough for a 128-axis basis.
PCA_ROWS = 20_000
#: Columns per chunk of ``top_k``'s first pass (the chunks' maxima).
TOP_K_CHUNK = 64
#: Bytes of similarities per block of the exact search (640 query rows at 50k items).
QUERY_BLOCK_BYTES = 128 << 20
#: faiss HNSW: links per node (M), candidates kept while building and searching (0.9988
#: recall@10 at 50k MNIST rows, session 8). usearch: its defaults, connectivity 16.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 64
USEARCH_CONNECTIVITY = 16
BACKENDS = ("exact", "faiss", "usearch")
#: What users choose from: ``auto`` picks one of ``BACKENDS`` by the pool's size.
GRAPH_BACKENDS = ("auto", *BACKENDS)
DEFAULT_BACKEND = "auto"
#: ``auto`` searches exactly up to this many rows: there exact costs at most ~5 s on 2 cores
#: (4.7 s at 20k against faiss's 1.9 s, measured) and loses no neighbour; above it exact
#: grows as n² (16.5 s against 5.2 s at 50k, hours at 1M), so the approximation pays.
EXACT_MAX_ROWS = 20_000
#: The HNSW libraries ``auto`` uses above ``EXACT_MAX_ROWS``, the first installed one.
INDEX_BACKENDS = ("faiss", "usearch")
#: Import name of each HNSW backend's package, and its pip name.
_PACKAGES = {"faiss": ("faiss", "faiss-cpu"), "usearch": ("usearch", "usearch")}


@dataclass(frozen=True)
class PoolGraph:
    """Each pool row's ``k`` neighbours (``neighbors`` [n, k]) and row-normalised ``weights``.

    ``mean``/``axes`` project raw embeddings into the search space (so new rows can be
    placed), ``points`` are the pool's projected, normalised rows, ``sigma`` the kernel width.
    ``backend``: the one that built it (never ``auto``); ``seconds``: what getting it cost
    this process; ``cached``: read from disk (``alcli.learner.graph_cache``), not built.
    """

    neighbors: NDArray[np.int64]
    weights: NDArray[np.float32]
    scaler: Scaler
    axes: NDArray[np.float32]
    points: NDArray[np.float32]
    sigma: float
    backend: str
    seconds: float
    cached: bool = False

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])

    def project(self, X: ArrayLike) -> NDArray[np.float32]:
        """Rows of ``X`` in the search space: standardized, projected, L2-normalised."""
        return _normalised(self.scaler.transform(X) @ self.axes)

    def smooth_pool(
        self,
        X: ArrayLike,
        beta: float = DEFAULT_SMOOTH,
        *,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """The pool's own embeddings ``X`` (the rows the graph was built on), smoothed
        (into ``out`` when given: no second pool-sized array at 1M rows)."""
        arr = np.asarray(X)
        if arr.shape[0] != self.neighbors.shape[0]:
            raise UsageError(
                f"the graph has {self.neighbors.shape[0]} rows; these embeddings {arr.shape[0]}"
            )
        return _mix(arr, arr, self.neighbors, self.weights, beta, out=out)

    def smooth_new(
        self, X_new: ArrayLike, X_pool: ArrayLike, beta: float = DEFAULT_SMOOTH
    ) -> NDArray[np.float32]:
        """Rows not in the pool (an eval set) smoothed over their neighbours in the pool."""
        new = np.asarray(X_new)
        neighbors, sims = exact_knn(self.project(new), self.points, self.k)
        weights = _edge_weights(sims, self.sigma)
        return _mix(new, np.asarray(X_pool), neighbors, weights, beta)


def build_graph(
    X: ArrayLike,
    *,
    k: int = DEFAULT_K,
    dim: int = DEFAULT_DIM,
    backend: str = DEFAULT_BACKEND,
    scaler: Scaler | None = None,
) -> PoolGraph:
    """The kNN graph of the pool ``X`` (no item is its own neighbour), deterministic.

    ``backend``: one of ``GRAPH_BACKENDS`` (``auto`` resolved by ``choose_backend``).
    """
    started = time.perf_counter()
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise UsageError(f"a neighbour graph needs [n >= 2, d] embeddings, got {arr.shape}")
    n = arr.shape[0]
    backend = choose_backend(backend, n)
    k = max(1, min(k, n - 1))
    scaler = scaler if scaler is not None else fit_scaler(arr)
    axes = principal_axes(arr, scaler, dim)
    points = _normalised(_blocked_transform(arr, scaler, axes))
    if backend == "exact":
        neighbors, sims = exact_knn(points, points, k, exclude_self=True)
    else:
        neighbors, sims = index_knn(points, k, backend)
    sigma = float(np.median(1.0 - sims)) or 1.0
    return PoolGraph(
        neighbors=neighbors,
        weights=_edge_weights(sims, sigma),
        scaler=scaler,
        axes=axes,
        points=points,
        sigma=sigma,
        backend=backend,
        seconds=time.perf_counter() - started,
    )


def check_backend(name: str) -> str:
    """``name`` normalised if it is one of ``GRAPH_BACKENDS``, else ``UsageError`` (exit 2)."""
    backend = str(name).strip().lower()
    if backend in GRAPH_BACKENDS:
        return backend
    close = difflib.get_close_matches(backend, GRAPH_BACKENDS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(
        f"unknown graph backend {name!r}", hint=f"{hint}use one of {', '.join(GRAPH_BACKENDS)}"
    )


def installed(backend: str) -> bool:
    """Whether the HNSW ``backend``'s package can be imported (``exact`` always can)."""
    if backend not in _PACKAGES:
        return True
    return importlib.util.find_spec(_PACKAGES[backend][0]) is not None


def choose_backend(backend: str, n: int) -> str:
    """The backend that builds a graph of ``n`` rows: ``auto`` resolved (see the module doc).

    A pool above ``EXACT_MAX_ROWS`` with no HNSW library installed is a ``UsageError`` that
    says what to install: exact search there would silently cost (n / 50k)² × ~17 s.
    """
    backend = check_backend(backend)
    if backend != "auto":
        if not installed(backend):
            raise UsageError(
                f"the {backend} graph backend needs the {_PACKAGES[backend][1]} package",
                hint="pip install 'alcli[graph]', or use --graph-backend exact",
            )
        return backend
    if n <= EXACT_MAX_ROWS:
        return "exact"
    for name in INDEX_BACKENDS:
        if installed(name):
            return name
    raise UsageError(
        f"a kNN graph of {n:,} items needs an HNSW index (exact search grows as n²: "
        f"~{(n / 50_000) ** 2:,.0f}x its ~17 s on 2 cores at 50,000 items), and neither "
        "faiss-cpu nor usearch is installed",
        hint="pip install 'alcli[graph]', or pass --graph-backend exact to wait for it",
    )


def principal_axes(X: NDArray[Any], scaler: Scaler, dim: int) -> NDArray[np.float32]:
    """The top ``dim`` principal axes [d, dim] of the standardized rows (evenly spaced sample)."""
    n, d = X.shape
    dim = max(1, min(dim, d))
    rows = np.linspace(0, n - 1, num=min(n, PCA_ROWS)).astype(np.int64)
    Z = scaler.transform(X[np.unique(rows)]).astype(np.float64)
    Z -= Z.mean(axis=0)
    _, vectors = np.linalg.eigh(Z.T @ Z)
    axes = vectors[:, ::-1][:, :dim]
    # eigh's sign is arbitrary; fix it so the same data gives the same axes everywhere.
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(dim)])
    return np.ascontiguousarray(axes * signs, dtype=np.float32)


def exact_knn(
    queries: NDArray[np.float32],
    points: NDArray[np.float32],
    k: int,
    *,
    exclude_self: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each query's ``k`` most similar ``points`` (inner product), best first, ties to lower row.

    ``exclude_self``: queries are ``points`` and a row is not its own neighbour.
    """
    n, m = queries.shape[0], points.shape[0]
    k = min(k, m - 1 if exclude_self else m)
    block = max(1, min(n, QUERY_BLOCK_BYTES // (4 * max(m, 1))))
    neighbors = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        S = queries[start : start + block] @ points.T
        rows = np.arange(S.shape[0])
        if exclude_self:
            S[rows, start + rows] = -np.inf
        neighbors[start : start + block], sims[start : start + block] = top_k(S, k)
    return neighbors, sims


def top_k(S: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each row's ``k`` largest entries: (columns, values), best first, ties to the lower column.

    Exact, through ``TOP_K_CHUNK``-column chunks: a row's top k lie in the k chunks with the
    largest maxima (ties to the lower chunk; each chunk ahead of one holding a top entry holds
    a better or an equal, earlier entry), so only those k·chunk entries are sorted. 10,000 eval
    rows against 50k pool rows: 3.05 s instead of 4.85 s with an argpartition of every entry
    (``benchmarks/exact_knn_topk.py``), and equal entries on the k-th place go to the lower
    column, as the order always did (argpartition chose among them as it pleased)."""
    rows, m = S.shape
    chunks = -(-m // TOP_K_CHUNK)
    padded = S
    if m % TOP_K_CHUNK:
        padded = np.full((rows, chunks * TOP_K_CHUNK), -np.inf, dtype=S.dtype)
        padded[:, :m] = S
    blocks = padded.reshape(rows, chunks, TOP_K_CHUNK)
    best = blocks.max(axis=2)
    chunk_ids = np.broadcast_to(np.arange(chunks), best.shape)
    # lexsort's last key is primary: the largest maxima first, equal ones in chunk order
    kept = np.lexsort((chunk_ids, -best), axis=1)[:, : min(k, chunks)]
    values = np.take_along_axis(blocks, kept[:, :, None], axis=1).reshape(rows, -1)
    columns = (kept[:, :, None] * TOP_K_CHUNK + np.arange(TOP_K_CHUNK)).reshape(rows, -1)
    order = np.lexsort((columns, -values), axis=1)[:, :k]
    return np.take_along_axis(columns, order, axis=1), np.take_along_axis(values, order, axis=1)


def index_knn(
    points: NDArray[np.float32], k: int, backend: str
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Approximate kNN with an HNSW index from faiss-cpu or usearch (the ``graph`` extra).

    Built on one thread (deterministic), searched on all.
    """
    n = points.shape[0]
    if not installed(backend):
        raise UsageError(
            f"the {backend} graph backend needs the {_PACKAGES[backend][1]} package",
            hint="pip install 'alcli[graph]', or use the exact backend",
        )
    if backend == "faiss":
        neighbors, sims = _faiss_knn(points, k)
    else:
        neighbors, sims = _usearch_knn(points, k)
    neighbors = np.asarray(neighbors, dtype=np.int64)
    sims = np.asarray(sims, dtype=np.float32)
    # drop each row itself (or, where the index missed it, the last neighbour)
    own = neighbors == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    return neighbors[keep].reshape(n, k), sims[keep].reshape(n, k)


def _faiss_knn(points: NDArray[np.float32], k: int) -> tuple[Any, Any]:
    import faiss  # type: ignore[import-not-found,import-untyped,unused-ignore]

    index = faiss.IndexHNSWFlat(points.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # insertions on several threads race: not deterministic
    try:
        index.add(points)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    sims, neighbors = index.search(points, k + 1)
    return neighbors, sims


def _usearch_knn(points: NDArray[np.float32], k: int) -> tuple[Any, Any]:
    from usearch.index import Index  # type: ignore[import-not-found,unused-ignore]

    n, d = points.shape
    index = Index(ndim=d, metric="ip", dtype="f32", connectivity=USEARCH_CONNECTIVITY)
    index.add(np.arange(n), points, threads=1)  # one thread: deterministic (see module doc)
    found = index.search(points, k + 1, threads=0)
    return found.keys.astype(np.int64), 1.0 - found.distances


def _edge_weights(sims: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    w = np.exp(-(1.0 - sims.astype(np.float64)) / sigma)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    return w.astype(np.float32)


def _mix(
    rows: NDArray[Any],
    pool: NDArray[Any],
    neighbors: NDArray[np.int64],
    weights: NDArray[np.float32],
    beta: float,
    block: int = 8192,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """(1 − β)·rows + β·Σ w·pool[neighbours], block by block (bounded memory).

    The weighted sum runs one neighbour at a time, in order, as the [rows, k, d] einsum it
    replaced did (the same bits), without gathering every neighbour's row at once: 1.5 s
    instead of 2.8 s for 50k x 1280 and k = 10 (a 420 MiB temporary per block; a scratch
    timing, session 12)."""
    if not 0 <= beta <= 1:
        raise UsageError(f"smoothing weight must be in [0, 1], got {beta}")
    if out is None:
        out = np.empty(rows.shape, dtype=np.float32)
    mean = np.empty((min(block, rows.shape[0]), rows.shape[1]), dtype=np.float32)
    for start in range(0, rows.shape[0], block):
        nb = neighbors[start : start + block]
        w = weights[start : start + block].astype(np.float32, copy=False)
        part = mean[: len(nb)]
        np.multiply(pool[nb[:, 0]], w[:, :1], out=part)
        for j in range(1, nb.shape[1]):
            part += pool[nb[:, j]] * w[:, j : j + 1]
        out[start : start + block] = (1.0 - beta) * rows[start : start + block] + beta * part
    return out


def _blocked_transform(
    X: NDArray[Any], scaler: Scaler, axes: NDArray[np.float32], block: int = 65_536
) -> NDArray[np.float32]:
    out = np.empty((X.shape[0], axes.shape[1]), dtype=np.float32)
    for start in range(0, X.shape[0], block):
        out[start : start + block] = scaler.transform(X[start : start + block]) @ axes
    return out


def _normalised(Z: NDArray[Any]) -> NDArray[np.float32]:
    Z = np.asarray(Z, dtype=np.float32)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    return np.ascontiguousarray(Z / np.maximum(norms, 1e-12), dtype=np.float32)
