"""``--min-distance`` at a million items: the whole constrained selection, and its kernel
with numpy vs faiss-cpu vs usearch (exact search), interleaved rounds.

The kernel: each examined candidate's largest cosine similarity to the labeled items and the
picks so far (exact: a flat inner-product search with k=1). Pool 1M x d float32 (random
unit-ish vectors with planted near-duplicates), labeled ``--labeled`` items, budget
``--budget``, margin's order from random class probabilities. Prints JSON: per library the
median kernel seconds over rounds and the ratio to numpy; the end-to-end
``constrained_pick`` seconds (what ``alcli select --min-distance`` adds). faiss and usearch
are optional: a library that is not installed is reported as missing.

    nice -n 5 python benchmarks/min_distance_scale.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from alcli.constraints import BLOCK, _max_similarity, _unit, constrained_pick, parse


def kernels() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Each library's exact max-similarity of queries to a base set (unit rows)."""
    out: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"numpy": _max_similarity}
    try:
        import faiss

        def with_faiss(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
            index = faiss.IndexFlatIP(base.shape[1])
            index.add(base)
            sims, _ = index.search(queries, 1)
            return sims[:, 0]

        out["faiss-cpu"] = with_faiss
    except ImportError:
        pass
    try:
        from usearch.index import search as usearch_search

        def with_usearch(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
            matches = usearch_search(base, queries, 1, metric="ip", exact=True, threads=0)
            return 1.0 - np.asarray(matches.distances)[:, 0]

        out["usearch"] = with_usearch
    except ImportError:
        pass
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (always on)")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--labeled", type=int, default=20_000)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    # the most uncertain items come in tight groups: a tenth of them near-duplicates
    probs = rng.dirichlet(np.ones(10), size=args.n).astype(np.float32)
    labeled = np.zeros(args.n, dtype=bool)
    labeled[rng.choice(args.n, args.labeled, replace=False)] = True
    from alcli import strategies

    order = strategies.run("margin", budget=4 * args.budget, probs=probs, labeled=labeled)
    for i in range(0, order.size, 10):
        X[order[i + 1 : i + 3]] = X[order[i]] + 0.01 * rng.standard_normal(
            (len(order[i + 1 : i + 3]), args.dim), dtype=np.float32
        )

    queries = _unit(X[order[:BLOCK]])
    base = _unit(X[np.flatnonzero(labeled)])
    libs = kernels()
    times: dict[str, list[float]] = {name: [] for name in libs}
    cpu: dict[str, list[float]] = {name: [] for name in libs}
    reference = _max_similarity(queries, base)
    agree: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, kernel in libs.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            got = kernel(queries, base)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            agree[name] = float(np.abs(np.asarray(got) - reference).max())
    numpy_median = statistics.median(times["numpy"])
    numpy_cpu = statistics.median(cpu["numpy"])
    kernel_report = {
        name: {
            "median_s": round(statistics.median(t), 4),
            "ratio_to_numpy": round(statistics.median(t) / numpy_median, 2),
            "median_cpu_s": round(statistics.median(cpu[name]), 4),
            "cpu_ratio_to_numpy": round(statistics.median(cpu[name]) / numpy_cpu, 2),
            "max_abs_diff_vs_numpy": agree[name],
        }
        for name, t in times.items()
    }
    end_to_end: list[float] = []
    plain: list[float] = []
    end_to_end_cpu: list[float] = []
    report: Any = None
    for _ in range(3):
        started = time.perf_counter()
        strategies.run("margin", budget=args.budget, probs=probs, labeled=labeled)
        plain.append(time.perf_counter() - started)
        started, cpu_started = time.perf_counter(), time.process_time()
        _, report = constrained_pick(
            "margin",
            budget=args.budget,
            constraints=parse(None, 0.01),
            embeddings=X,
            labeled=labeled,
            probs=probs,
        )
        end_to_end.append(time.perf_counter() - started)
        end_to_end_cpu.append(time.process_time() - cpu_started)
    result = {
        "n": args.n,
        "dim": args.dim,
        "labeled": args.labeled,
        "budget": args.budget,
        "block": BLOCK,
        "kernel_block_vs_labeled": kernel_report,
        "libraries_missing": sorted({"faiss-cpu", "usearch"} - set(libs)),
        "select_margin_s": round(statistics.median(plain), 3),
        "select_margin_min_distance_s": round(statistics.median(end_to_end), 3),
        "select_margin_min_distance_cpu_s": round(statistics.median(end_to_end_cpu), 3),
        "min_distance_report": report.as_dict(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
