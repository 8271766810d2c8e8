"""How many labels each strategy needs on MNIST: the zoo's quality, measured.

Frozen MobileNetV2 embeddings at 112 px (see ``mnist_features.py``), pool = 50k training
digits, eval = 10k test digits, a logistic head on standardized features. Every strategy
starts from the same 100 random labels (per seed), then buys 100 per round for 10 rounds.
Prints JSON: each strategy's mean accuracy curve over the seeds and
``labels_to_reach_random_final`` (labels needed to match random's final accuracy, linearly
interpolated between rounds; null when never reached).

    python benchmarks/label_efficiency.py --json --plot benchmarks/label_efficiency.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from alcli import strategies
from alcli.learner import evaluate, fit_scaler, train_committee, train_head
from mnist_features import mnist_features


def run_curve(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    Xe: np.ndarray,
    ye: np.ndarray,
    scaler: Any,
    *,
    initial: np.ndarray,
    rounds: int,
    batch: int,
    seed: int,
) -> list[float]:
    """Accuracy after the initial set and after each round, for one strategy and seed."""
    info = strategies.get(name)
    labeled = np.zeros(len(X), dtype=bool)
    labeled[initial] = True
    curve = []
    for r in range(rounds + 1):
        rows = np.flatnonzero(labeled)
        head = train_head(X[rows], y[rows], scaler=scaler)
        curve.append(evaluate(head, Xe, ye).accuracy)
        if r == rounds:
            break
        probs = head.predict_proba(X) if "probs" in info.needs else None
        committee = (
            train_committee(X[rows], y[rows], k=5, seed=seed * 1000 + r, scaler=scaler).proba(X)
            if "committee" in info.needs
            else None
        )
        picks = strategies.run(
            name,
            budget=batch,
            probs=probs,
            committee=committee,
            embeddings=X,
            labeled=labeled,
            seed=seed * 1000 + r,
        )
        labeled[picks] = True
    return curve


def labels_to_reach(labels: list[int], curve: list[float], target: float) -> float | None:
    """First label count at which ``curve`` reaches ``target`` (linear between rounds)."""
    for i, acc in enumerate(curve):
        if acc >= target:
            if i == 0:
                return float(labels[0])
            a0, a1 = curve[i - 1], acc
            frac = (target - a0) / (a1 - a0) if a1 > a0 else 1.0
            return float(labels[i - 1] + frac * (labels[i] - labels[i - 1]))
    return None


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, curve in sorted(result["curves"].items()):
        style = {"color": "black", "linewidth": 2.5} if name == "random" else {"linewidth": 1.3}
        ax.plot(
            curve["labels"], curve["accuracy_mean"], marker="o", markersize=3, label=name, **style
        )
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy (mean of seeds)")
    ax.set_title("MNIST, frozen MobileNetV2 @112px, logistic head")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", action="store_true", help="print JSON (always on; kept for symmetry)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--strategies", default="", help="comma list (default: the whole zoo)")
    parser.add_argument("--plot", default="", help="write the curves to this PNG")
    args = parser.parse_args()

    pool, test = mnist_features()
    scaler = fit_scaler(pool.X)
    names = [s for s in args.strategies.split(",") if s] or [s.name for s in strategies.available()]
    if "random" not in names:
        names.insert(0, "random")
    labels = [args.initial + r * args.batch for r in range(args.rounds + 1)]
    curves: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        per_seed = []
        for seed in range(args.seeds):
            initial = np.random.default_rng(seed).choice(len(pool.X), args.initial, replace=False)
            per_seed.append(
                run_curve(
                    name,
                    pool.X,
                    pool.y,
                    test.X,
                    test.y,
                    scaler,
                    initial=initial,
                    rounds=args.rounds,
                    batch=args.batch,
                    seed=seed,
                )
            )
        acc = np.array(per_seed)
        curves[name] = {
            "labels": labels,
            "accuracy_mean": [round(float(a), 4) for a in acc.mean(axis=0)],
            "accuracy_std": [round(float(a), 4) for a in acc.std(axis=0)],
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{name:18} final {acc.mean(axis=0)[-1]:.4f}  ({curves[name]['seconds']} s)",
            file=sys.stderr,
        )
    random_final = curves["random"]["accuracy_mean"][-1]
    result = {
        "pool": len(pool.X),
        "eval": len(test.X),
        "dim": int(pool.X.shape[1]),
        "seeds": args.seeds,
        "rounds": args.rounds,
        "initial": args.initial,
        "batch": args.batch,
        "random_final_accuracy": random_final,
        "labels_to_reach_random_final": {
            name: labels_to_reach(labels, c["accuracy_mean"], random_final)
            for name, c in curves.items()
        },
        "curves": curves,
    }
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
