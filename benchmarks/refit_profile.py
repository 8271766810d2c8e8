"""Where one ``graph_selftrain`` fit spends its time, at the agent overhead run's label count.

The MNIST pool (``mnist_features.py``) in the graph head's space (the faiss graph
``label_efficiency.py`` keeps in ``benchmarks/.work``), ``--labels`` random rows with their
labels, and ``semisup.fit_head``'s steps run one by one: the labeled step (from a head fitted
on ``--init-labels`` of the same rows, as the agent starts each round from the last), each
pseudo-label pass and each refit, with its L-BFGS iterations. Also the standardized copy of
the refit's training rows two ways: gathered and then standardized as one expression (the way
before session 11: three pool-sized temporaries, each a fresh allocation) and
``Scaler.transform(X, rows=...)`` (one array, written block by block). Prints JSON.

    .venv/bin/python benchmarks/refit_profile.py --json
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from typing import Any

import numpy as np

from alcli.learner import head_space, train_head
from alcli.learner.semisup import SELFTRAIN, pseudo_labels
from label_efficiency import cached_graph
from mnist_features import mnist_features


def seconds(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)), 3), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (always)")
    parser.add_argument("--labels", type=int, default=5700)
    parser.add_argument("--init-labels", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    pool, _ = mnist_features()
    X, y = np.asarray(pool.X), np.asarray(pool.y)
    space = head_space("graph_selftrain", X, graph=cached_graph(X, "faiss"))
    rows = np.random.default_rng(0).permutation(len(X))[: args.labels]
    labels = y[rows]
    shipped = SELFTRAIN["graph_selftrain"]
    settings = {k: v for k, v in shipped.items() if k not in ("refits", "count_labeled")}
    if shipped.get("count_labeled"):  # the cap counts the bought labels (fit_head does this)
        settings["max_rows"] = max(0, settings["max_rows"] - len(rows))

    def fit(fit_rows: np.ndarray, fit_labels: np.ndarray, init: Any = None) -> Any:
        return train_head(space.pool, fit_labels, rows=fit_rows, scaler=space.scaler, init=init)

    init = fit(rows[: args.init_labels], labels[: args.init_labels])
    steps: list[dict[str, Any]] = []
    s, head = seconds(partial(fit, rows, labels, init), 1)
    steps.append({"step": "labeled", "rows": len(rows), "iterations": head.n_iter, "s": s})
    for refit in range(SELFTRAIN["graph_selftrain"]["refits"]):
        s, (extra, extra_labels) = seconds(
            partial(pseudo_labels, head, space.pool, rows, **settings), 1
        )
        steps.append({"step": f"pseudo_labels {refit + 1}", "rows": len(extra), "s": s})
        all_rows = np.concatenate([rows, extra])
        all_labels = np.concatenate([labels, extra_labels])
        s, head = seconds(partial(fit, all_rows, all_labels, head), 1)
        steps.append(
            {"step": f"refit {refit + 1}", "rows": len(all_rows), "iterations": head.n_iter, "s": s}
        )
    scaler = space.scaler

    def standardize_plain(pool: np.ndarray, picked: np.ndarray) -> np.ndarray:
        return (pool[picked] - scaler.mean) / scaler.scale

    standardize = []
    # the refit's rows now, and 42,000: about the confident rows the head refitted on before
    for count in (len(all_rows), 42_000):
        picked = np.sort(np.random.default_rng(1).permutation(len(X))[:count])
        plain_s, plain = seconds(partial(standardize_plain, space.pool, picked), args.repeats)
        blocked_s, blocked = seconds(
            partial(scaler.transform, space.pool, rows=picked), args.repeats
        )
        standardize.append(
            {
                "rows": count,
                "mib": round(plain.nbytes / 2**20, 1),
                "gather_then_expression_s": plain_s,
                "transform_rows_s": blocked_s,
                "same_bits": bool(np.array_equal(plain, blocked)),
            }
        )
    result = {
        "pool": list(space.pool.shape),
        "labels": args.labels,
        "init_labels": args.init_labels,
        "steps": steps,
        "fit_s": round(sum(step["s"] for step in steps), 3),
        "standardize": standardize,
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
