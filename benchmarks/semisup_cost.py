"""What each head kind costs at 50k and 1M items: graph builds per backend, head spaces, fits.

Issue 18 asks for the semi-supervised heads' cost "measured at 50k and 1M items". Parts, each
run on its own (``--part``, one hold of the benchmark lock each) and printing one JSON object:

``scaling``
    exact vs HNSW graph builds at 5k/10k/20k MNIST rows (50k: ``graph50k``): where ``auto``
    switches from exact to HNSW.
``graph50k``
    the 50,000 MNIST training digits (``mnist_features.py``'s cache, MobileNetV2 at 112 px,
    1280-d): the content digest (the graph cache's key), each backend's build, recall@10
    against exact on a sample of rows, and the share of neighbours with the item's label.
``heads50k`` / ``heads1m``
    per head kind: the head space (graph read from the scratch cache, timed apart), one fit
    with 400 random labels, for the self-training kinds the refit (``fit_head`` minus the
    plain fit), predicting the pool.
``make1m``
    writes the 1M pool (untimed): the 50k real rows, then 19 synthetic copies, each row
    x_i + λ(x_j − x_i) with x_j one of x_i's 10 nearest neighbours and λ ~ U(0, 1) (SMOTE's
    interpolation, Chawla et al., JAIR 2002): the pool's real cluster structure, no
    duplicates. Labels: the row's own (x_i's). A float32 memory-mapped file, 5.1 GB.
``graph1m``
    one backend's build at 1M (``--backend``), the graph cache's save and load, and recall@10
    against exact on a sample; exact at 1M is extrapolated from ``--exact-blocks`` measured
    query blocks of the exact search (its cost is the same for every block).

Every part reports the peak resident memory: ``VmHWM`` (the kernel's), and the peak of
anonymous memory sampled every 50 ms (the memory-mapped pool's pages are file pages the
kernel may drop, so they count in the first and not the second). Scratch files (the 1M pool,
graphs) go to ``--work`` (default /tmp/semisup_cost), never to benchmarks/.work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcli.learner import HEAD_KINDS, fit_head, head_space, train_head  # noqa: E402
from alcli.learner.graph import (  # noqa: E402
    DEFAULT_DIM,
    DEFAULT_K,
    QUERY_BLOCK_BYTES,
    build_graph,
    exact_knn,
    installed,
)
from alcli.learner.graph_cache import cached_graph, content_digest  # noqa: E402

N_1M = 1_000_000
LABELS = 400
RECALL_SAMPLE = 2000


class Memory:
    """Peak VmHWM and peak anonymous RSS (sampled) of this process, in GiB."""

    def __init__(self) -> None:
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_anon = max(self.peak_anon, self.status().get("RssAnon", 0))

    def report(self) -> dict[str, float]:
        now = self.status()
        self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
        return {
            "peak_rss_gib": round(now["VmHWM"] / 2**30, 2),
            "peak_anon_gib": round(self.peak_anon / 2**30, 2),
        }


@contextmanager
def timed(out: dict[str, Any], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - started, 3)


def mnist50k() -> tuple[np.ndarray, np.ndarray]:
    from mnist_features import mnist_features

    train, _ = mnist_features(test=10_000)
    return np.ascontiguousarray(train.X, dtype=np.float32), np.asarray(train.y)


def recall_at_k(graph_neighbors: np.ndarray, points: np.ndarray, k: int, sample: int) -> float:
    """Mean share of the exact k nearest neighbours an approximate graph found, on evenly
    spaced sample rows."""
    rows = np.linspace(0, len(points) - 1, num=min(sample, len(points))).astype(np.int64)
    truth = np.empty((len(rows), k), dtype=np.int64)
    for start in range(0, len(rows), 64):
        part = rows[start : start + 64]
        S = points[part] @ points.T
        S[np.arange(len(part)), part] = -np.inf
        truth[start : start + 64] = np.argpartition(-S, k - 1, axis=1)[:, :k]
    found = graph_neighbors[rows]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def agreement(neighbors: np.ndarray, y: np.ndarray) -> float:
    return float((y[neighbors] == y[:, None]).mean())


def backends(wanted: str) -> list[str]:
    return [b for b in wanted.split(",") if b == "exact" or installed(b)]


def part_scaling(args: argparse.Namespace) -> dict[str, Any]:
    X, _ = mnist50k()
    out: dict[str, Any] = {}
    for n in (5_000, 10_000, 20_000):  # 50k: part graph50k
        rows = np.linspace(0, len(X) - 1, num=n).astype(np.int64)
        for backend in backends(args.backends):
            if backend == "exact" and n > args.exact_max:
                continue
            graph = build_graph(X[rows], backend=backend)
            out[f"{backend}_{n}_s"] = round(graph.seconds, 2)
            print(f"{backend} {n}: {graph.seconds:.1f} s", file=sys.stderr, flush=True)
    return out


def part_graph50k(args: argparse.Namespace) -> dict[str, Any]:
    X, y = mnist50k()
    out: dict[str, Any] = {"n": len(X), "d": X.shape[1], "k": DEFAULT_K, "dim": DEFAULT_DIM}
    with timed(out, "content_digest_s"):
        content_digest(X)
    graphs = {}
    for backend in backends(args.backends):
        graph = build_graph(X, backend=backend)
        graphs[backend] = graph
        out[f"{backend}_build_s"] = round(graph.seconds, 2)
        out[f"{backend}_label_agreement"] = round(agreement(graph.neighbors, y), 4)
        print(f"{backend}: {graph.seconds:.1f} s", file=sys.stderr, flush=True)
    if "exact" in graphs:
        exact = graphs["exact"].neighbors
        for backend, graph in graphs.items():
            if backend != "exact":
                same = np.mean(
                    [len(set(a) & set(b)) / 10 for a, b in zip(graph.neighbors, exact, strict=True)]
                )
                out[f"{backend}_recall10_all_rows"] = round(float(same), 4)
    else:
        for backend, graph in graphs.items():
            out[f"{backend}_recall10_sample"] = round(
                recall_at_k(graph.neighbors, graph.points, graph.k, RECALL_SAMPLE), 4
            )
    # determinism: the same input twice gives the same graph (HNSW built on one thread)
    for backend, graph in graphs.items():
        if backend != "exact" and args.check_determinism:
            again = build_graph(X, backend=backend)
            out[f"{backend}_same_graph_twice"] = bool(
                np.array_equal(again.neighbors, graph.neighbors)
            )
    return out


def part_make1m(args: argparse.Namespace) -> dict[str, Any]:
    X, y = mnist50k()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    graph = cached_graph(X, directory=work / "graphs", backend="faiss")
    rng = np.random.default_rng(0)
    copies = N_1M // len(X)
    pool = np.lib.format.open_memmap(
        work / "pool1m.npy", mode="w+", dtype=np.float32, shape=(copies * len(X), X.shape[1])
    )
    pool[: len(X)] = X
    for c in range(1, copies):
        j = graph.neighbors[np.arange(len(X)), rng.integers(0, graph.k, size=len(X))]
        lam = rng.random(len(X), dtype=np.float32)[:, None]
        pool[c * len(X) : (c + 1) * len(X)] = X + lam * (X[j] - X)
    pool.flush()
    np.save(work / "labels1m.npy", np.tile(y, copies))
    return {"rows": int(pool.shape[0]), "file": str(work / "pool1m.npy")}


def pool1m(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    work = Path(args.work)
    X = np.load(work / "pool1m.npy", mmap_mode="r")
    return X, np.load(work / "labels1m.npy")


def part_graph1m(args: argparse.Namespace) -> dict[str, Any]:
    X, y = pool1m(args)
    out: dict[str, Any] = {"n": int(X.shape[0]), "d": int(X.shape[1]), "backend": args.backend}
    if args.backend == "exact":
        return exact_extrapolated(X, args.exact_blocks, out)
    with timed(out, "content_digest_s"):
        content_digest(X)
    folder = Path(args.work) / "graphs"
    for old in folder.glob("graph-*.npz"):
        with np.load(old) as data:
            if int(data["neighbors"].shape[0]) == X.shape[0] and str(data["backend"]) == (
                args.backend
            ):
                old.unlink()  # measure the build, not a load
    graph = cached_graph(X, directory=folder, backend=args.backend)
    out["build_s_incl_digest_and_save"] = round(graph.seconds, 1)
    loaded = cached_graph(X, directory=folder, backend=args.backend)
    out["load_s_incl_digest"] = round(loaded.seconds, 1)
    out["cached_on_second_call"] = loaded.cached
    out["file_gib"] = round(max(p.stat().st_size for p in folder.glob("graph-*.npz")) / 2**30, 3)
    out["label_agreement"] = round(agreement(graph.neighbors, y), 4)
    out["recall10_sample"] = round(
        recall_at_k(graph.neighbors, graph.points, graph.k, RECALL_SAMPLE), 4
    )
    out["recall_sample_rows"] = RECALL_SAMPLE
    return out


def exact_extrapolated(X: np.ndarray, blocks: int, out: dict[str, Any]) -> dict[str, Any]:
    """Exact search's cost at 1M: the projection measured, then ``blocks`` query blocks of the
    blocked search timed and scaled to all rows (every block costs the same)."""
    from alcli.learner.graph import _blocked_transform, _normalised, principal_axes
    from alcli.learner.heads import fit_scaler

    started = time.perf_counter()
    scaler = fit_scaler(X)
    axes = principal_axes(X, scaler, DEFAULT_DIM)
    points = _normalised(_blocked_transform(X, scaler, axes))
    out["projection_s"] = round(time.perf_counter() - started, 1)
    n = len(points)
    block = max(1, QUERY_BLOCK_BYTES // (4 * n))
    started = time.perf_counter()
    exact_knn(points[: blocks * block], points, DEFAULT_K)
    measured = time.perf_counter() - started
    out.update(
        exact_block_rows=block,
        exact_blocks_measured=blocks,
        exact_measured_s=round(measured, 2),
        exact_search_extrapolated_s=round(measured * n / (blocks * block), 0),
    )
    return out


def part_heads(args: argparse.Namespace, load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> Any:
    X, y = load()
    n = int(X.shape[0])
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n, size=LABELS, replace=False))
    folder = Path(args.work) / "graphs"
    out: dict[str, Any] = {"n": n, "d": int(X.shape[1]), "labels": LABELS, "kinds": {}}
    kinds = [k for k in args.kinds.split(",") if k in HEAD_KINDS]
    if any(k in ("graph", "graph_selftrain") for k in kinds):  # every graph kind then reads it
        with timed(out, "graph_prepare_s"):
            prepared = cached_graph(X, directory=folder, backend=args.backend)
        out["graph_prepared_from_cache"] = prepared.cached
        del prepared
    for kind in kinds:
        entry: dict[str, Any] = {}
        started = time.perf_counter()
        space = head_space(kind, X, backend=args.backend, cache=folder)
        entry["space_s"] = round(time.perf_counter() - started, 2)
        if space.graph is not None:
            entry["graph_s"] = round(space.graph.seconds, 2)
            entry["graph_cached"] = space.graph.cached
            entry["graph_backend"] = space.graph.backend
            entry["space_without_graph_s"] = round(entry["space_s"] - space.graph.seconds, 2)
        with timed(entry, "fit_400_s"):
            plain = train_head(space.pool[rows], y[rows], scaler=space.scaler)
        if kind in ("selftrain", "graph_selftrain"):
            with timed(entry, "fit_head_s"):
                head = fit_head(space, rows, y[rows])
            entry["selftrain_refit_s"] = round(entry["fit_head_s"] - entry["fit_400_s"], 2)
        else:
            head = plain
        with timed(entry, "predict_pool_s"):
            probs = head.predict_proba(space.pool)
        entry["pool_accuracy"] = round(float((head.classes[probs.argmax(1)] == y).mean()), 4)
        entry["space_gib"] = round(space.pool.nbytes / 2**30, 2)
        out["kinds"][kind] = entry
        print(kind, entry, file=sys.stderr, flush=True)
        del space, probs, head, plain
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part",
        required=True,
        choices=["scaling", "graph50k", "heads50k", "make1m", "graph1m", "heads1m"],
    )
    parser.add_argument("--backends", default="exact,faiss,usearch")
    parser.add_argument("--backend", default="faiss", help="graph1m and heads*: one backend")
    parser.add_argument("--kinds", default=",".join(HEAD_KINDS))
    parser.add_argument("--exact-max", type=int, default=50_000)
    parser.add_argument("--exact-blocks", type=int, default=20)
    parser.add_argument("--check-determinism", action="store_true")
    parser.add_argument("--work", default="/tmp/semisup_cost")
    parser.add_argument("--json", action="store_true", help="print the JSON result (always)")
    args = parser.parse_args()
    memory = Memory()
    started = time.perf_counter()
    parts: dict[str, Callable[[], Any]] = {
        "scaling": lambda: part_scaling(args),
        "graph50k": lambda: part_graph50k(args),
        "heads50k": lambda: part_heads(args, mnist50k),
        "make1m": lambda: part_make1m(args),
        "graph1m": lambda: part_graph1m(args),
        "heads1m": lambda: part_heads(args, lambda: pool1m(args)),
    }
    result = parts[args.part]()
    result = {
        "part": args.part,
        **result,
        "wall_s": round(time.perf_counter() - started, 1),
        **memory.report(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_at_end": os.getloadavg(),
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
