"""Margin with and without ``--balance`` and ``--min-distance`` on MNIST: labels and spread.

The label-efficiency setup (``label_efficiency.py``): frozen MobileNetV2 features at 112 px,
pool = 50k training digits, eval = 10k test digits, a logistic head on standardized
features, 100 random labels to start (per seed), then 100 per round. Random runs to 2,000
labels; each margin variant runs until it reaches random's 2,000-label accuracy (or 2,000
labels). Prints JSON: ``labels_to_reach_random_2000`` per variant (linear between rounds;
null when never reached), the curves, the per-class spread of each variant's picks (true
classes of every label bought after the initial set: counts, max/min, coefficient of
variation), the seconds each selection took, and the cosine radius used (``--radius``;
default the 5th percentile of the pool's nearest-neighbour cosine distances, measured).

    nice -n 5 python benchmarks/constraints_mnist.py --json > benchmarks/constraints_mnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from alcli import strategies
from alcli.constraints import Constraints, class_groups, constrained_pick, parse
from alcli.learner import evaluate, fit_scaler, train_head
from label_efficiency import labels_to_reach
from mnist_features import mnist_features


def nn_radius(X: np.ndarray, percentile: float, sample: int = 4000, seed: int = 0) -> float:
    """The ``percentile`` of nearest-neighbour cosine distances of a sample to the pool."""
    rng = np.random.default_rng(seed)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    rows = rng.choice(len(X), size=sample, replace=False)
    best = np.full(sample, -np.inf, dtype=np.float32)
    for start in range(0, len(X), 8192):
        sims = U[rows] @ U[start : start + 8192].T
        own = (rows >= start) & (rows < start + 8192)
        sims[np.flatnonzero(own), rows[own] - start] = -np.inf
        np.maximum(best, sims.max(axis=1), out=best)
    return float(np.percentile(1 - best, percentile))


def run_curve(
    X: np.ndarray,
    y: np.ndarray,
    Xe: np.ndarray,
    ye: np.ndarray,
    scaler: Any,
    *,
    name: str,
    constraints: Constraints,
    initial: np.ndarray,
    rounds: int,
    batch: int,
    seed: int,
    stop_at: float | None,
) -> tuple[list[float], list[int], float]:
    """(accuracy after each round, true classes of the picks, seconds selecting)."""
    labeled = np.zeros(len(X), dtype=bool)
    labeled[initial] = True
    curve: list[float] = []
    picked: list[int] = []
    selecting = 0.0
    for r in range(rounds + 1):
        rows = np.flatnonzero(labeled)
        head = train_head(X[rows], y[rows], scaler=scaler)
        curve.append(evaluate(head, Xe, ye).accuracy)
        if r == rounds or (stop_at is not None and curve[-1] >= stop_at):
            break
        probs = head.predict_proba(X) if name != "random" else None
        started = time.perf_counter()
        if constraints.active:
            groups = class_groups(probs, head.classes) if constraints.balance else None
            chosen, _ = constrained_pick(
                name,
                budget=batch,
                constraints=constraints,
                embeddings=X,
                labeled=labeled,
                groups=groups,
                probs=probs,
                seed=seed * 1000 + r,
            )
            picks = chosen.indices
        else:
            picks = strategies.run(
                name, budget=batch, probs=probs, labeled=labeled, seed=seed * 1000 + r
            )
        selecting += time.perf_counter() - started
        labeled[picks] = True
        picked.extend(int(c) for c in y[picks])
    return curve, picked, selecting


def spread(classes: list[int], n_classes: int) -> dict[str, Any]:
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=n_classes)
    return {
        "counts": counts.tolist(),
        "max_over_min": round(float(counts.max() / max(counts.min(), 1)), 2),
        "cv": round(float(counts.std() / counts.mean()), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (always on)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--labels", type=int, default=2000, help="random's label count")
    parser.add_argument("--radius", type=float, default=None)
    parser.add_argument("--percentile", type=float, default=5.0)
    parser.add_argument("--target", type=float, default=None, help="random's accuracy, known")
    parser.add_argument("--only", default="", help="run the variants whose name has this")
    args = parser.parse_args()

    pool, test = mnist_features()
    X, y = np.ascontiguousarray(pool.X, dtype=np.float32), pool.y.astype(np.int64)
    scaler = fit_scaler(X)
    radius = args.radius if args.radius is not None else nn_radius(X, args.percentile)
    rounds = (args.labels - args.initial) // args.batch
    variants = {
        "random": ("random", Constraints()),
        "margin": ("margin", Constraints()),
        "margin --balance uniform": ("margin", parse("uniform", None)),
        f"margin --min-distance {radius:.4f}": ("margin", parse(None, radius)),
        f"margin --balance uniform --min-distance {radius:.4f}": (
            "margin",
            parse("uniform", radius),
        ),
    }
    labels = [args.initial + r * args.batch for r in range(rounds + 1)]
    target: float | None = args.target
    out: dict[str, Any] = {}
    for label, (name, constraints) in variants.items():
        if args.only not in label or (label == "random" and target is not None):
            continue
        per_seed, picks, seconds = [], [], 0.0
        started = time.perf_counter()
        for seed in range(args.seeds):
            initial = np.random.default_rng(seed).choice(len(X), args.initial, replace=False)
            curve, classes, selecting = run_curve(
                X,
                y,
                test.X,
                test.y,
                scaler,
                name=name,
                constraints=constraints,
                initial=initial,
                rounds=rounds,
                batch=args.batch,
                seed=seed,
                stop_at=target,
            )
            per_seed.append(curve)
            picks.extend(classes)
            seconds += selecting
        width = max(len(c) for c in per_seed)
        padded = np.array([c + [c[-1]] * (width - len(c)) for c in per_seed])
        mean = [round(float(a), 4) for a in padded.mean(axis=0)]
        if name == "random" and target is None:
            target = mean[-1]
        out[label] = {
            "labels": labels[:width],
            "accuracy_mean": mean,
            "labels_to_reach_random_2000": labels_to_reach(labels[:width], mean, target or 1.0),
            "pick_spread": spread(picks, 10),
            "selection_seconds_per_round": round(seconds / max(len(picks) / args.batch, 1), 3),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"{label:50} {out[label]['labels_to_reach_random_2000']}", file=sys.stderr)
    result = {
        "pool": len(X),
        "eval": len(test.X),
        "dim": int(X.shape[1]),
        "seeds": args.seeds,
        "initial": args.initial,
        "batch": args.batch,
        "random_labels": args.labels,
        "random_accuracy": target,
        "min_distance_radius": round(radius, 5),
        "radius_percentile_of_nn_distance": None if args.radius is not None else args.percentile,
        "variants": out,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
