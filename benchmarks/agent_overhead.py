"""What the PSHEA agent itself costs, with the oracle free: heads, forecasts, selection.

Synthetic ReLU'd Gaussian blobs stand in for a backbone's embeddings (50,000 x 1280, 10
classes, by default), the oracle answers from memory, and the run is the paper's setting:
7 strategies, 8 rounds. ``overhead_s`` is everything but the oracle (the target: <= 60 s for
the default size); ``timings`` splits it. Also prints the head-training time for one
10,000 x 1280, 10-class head (target < 3 s).

    .venv/bin/python benchmarks/agent_overhead.py --spend shared --json
    .venv/bin/python benchmarks/agent_overhead.py --spend paper --round-size 100
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from alcli.agent import AutoConfig, EvalSet, RoundSummary, run_auto
from alcli.learner import fit_scaler, train_head

PAPER_STRATEGIES = ("least_confidence", "margin", "ratio", "entropy", "coreset", "dbal", "bald")


def blobs(
    n: int, d: int, n_classes: int, rng: np.random.Generator, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, n_classes, size=n)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X += centers[y]
    np.maximum(X, 0, out=X)
    return X, y


class MemoryOracle:
    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        return {u: self.truth[u] for u in uris}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--round-size", type=int, default=700)
    parser.add_argument("--spend", default="shared", choices=("shared", "paper"))
    parser.add_argument("--strategies", default=",".join(PAPER_STRATEGIES))
    parser.add_argument("--separation", type=float, default=0.08)
    parser.add_argument("--skip-head", action="store_true", help="skip the 10k-row head timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.classes, args.dim), dtype=np.float32) * args.separation
    X, y = blobs(args.n, args.dim, args.classes, rng, centers)
    eval_X, eval_y = blobs(2000, args.dim, args.classes, rng, centers)
    uris = [f"s3://bench/{i:07d}.png" for i in range(args.n)]
    truth = {u: f"c{v}" for u, v in zip(uris, y, strict=True)}
    eval_set = EvalSet([f"s3://eval/{i}" for i in range(2000)], eval_X, [f"c{v}" for v in eval_y])

    result: dict[str, object] = {}
    if not args.skip_head:
        scaler = fit_scaler(X)
        train_head(X[:1000], y[:1000], scaler=scaler)  # warm up BLAS and scipy
        times = []
        for _ in range(3):
            started = time.perf_counter()
            head = train_head(X[:10_000], y[:10_000], scaler=scaler)
            times.append(time.perf_counter() - started)
        result["head_10k_s"] = {"min": min(times), "median": sorted(times)[1], "iters": head.n_iter}

    budget = args.initial + args.rounds * args.round_size * (
        len(args.strategies.split(",")) if args.spend == "paper" else 1
    )
    config = AutoConfig(
        target_accuracy=1.0,
        budget=budget,
        strategies=tuple(args.strategies.split(",")),
        initial=args.initial,
        round_size=args.round_size,
        spend=args.spend,
        max_rounds=args.rounds,
        plateau_rounds=args.rounds + 1,
    )

    def show(summary: RoundSummary) -> None:
        if not args.json:
            print(
                f"round {summary.round}: bought {summary.labels_bought}, "
                f"best {summary.best_accuracy:.3f}, out: {summary.eliminated}",
                flush=True,
            )

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        report = run_auto(
            uris, X, MemoryOracle(truth), config, out_dir=out, eval_set=eval_set, progress=show
        )
    result.update(
        {
            "n": args.n,
            "dim": args.dim,
            "spend": args.spend,
            "strategies": list(config.strategies),
            "rounds": report.rounds,
            "labels_bought": report.labels_bought,
            "winner": report.winner,
            "final_accuracy": report.final_accuracy,
            "stop_reason": report.stop_reason,
            "wall_s": time.perf_counter() - started,
            "overhead_s": report.timings["overhead"],
            "timings": {k: round(v, 3) for k, v in report.timings.items()},
            "strategy_seconds": {k: round(v, 3) for k, v in report.strategy_seconds.items()},
        }
    )
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
