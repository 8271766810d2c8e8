"""Do eliminations on evidence and the anchored power-law forecast pay, on a second data set?

``alcli auto``'s rules before issue 18 (one elimination every round on the paper's
exponential forecast, bootstrap committees) against after (eliminations on evidence, the
anchored power law, Laplace committees), the same with every strategy picking from the head
on every label bought (``--spend pooled``, the default since session 8; ``shared`` is
session 6's), same seeds, and every candidate alone. Data:
scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, UCI; the pixels are the
features), split once into a 1,297-item pool and a 500-item eval set, or ``--data mnist``
(the cached MobileNetV2 features, ``--subset`` pool items).

Prints JSON: per setting, labels to the target (the returned model; null = not reached),
the round margin was eliminated in, the winner, and the one-round forecast MAE after round 3
(points); ``best_single`` and each setting's ratio to it.

    .venv/bin/python benchmarks/auto_rules.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from alcli.agent import AutoConfig, EvalSet, Report, run_auto
from alcli.autorun import DEFAULT_CANDIDATES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_mnist import forecast_errors, labels_to_target

SETTINGS: dict[str, dict[str, Any]] = {
    "before": {
        "spend": "shared",
        "elimination": "every_round",
        "min_rounds": 1,
        "forecast_model": "exp",
        "posterior": "bootstrap",
    },
    # session 6's defaults: evidence, power law, Laplace, each strategy on its own set's head
    "shared": {"spend": "shared"},
    "after": {},  # the defaults (session 8: ``--spend pooled``)
    # pooled with Algorithm 1's elimination (one every round from round 1): measured, not default
    "pooled_every_round": {"elimination": "every_round", "min_rounds": 1},
}


def digits() -> tuple[list[str], np.ndarray, dict[str, str], EvalSet]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    X = data.data.astype(np.float32)[order]
    y = data.target[order]
    pool, ev = slice(0, 1297), slice(1297, None)
    uris = [f"digits://{i}" for i in range(1297)]
    truth = {u: str(int(v)) for u, v in zip(uris, y[pool], strict=True)}
    eval_set = EvalSet(
        [f"digits-eval://{i}" for i in range(500)], X[ev], [str(int(v)) for v in y[ev]]
    )
    return uris, X[pool], truth, eval_set


def mnist(subset: int) -> tuple[list[str], np.ndarray, dict[str, str], EvalSet]:
    from mnist_features import mnist_features

    pool, test = mnist_features()
    uris = list(pool.uris[:subset])
    truth = {u: str(int(v)) for u, v in zip(uris, pool.y[:subset], strict=True)}
    eval_set = EvalSet(list(test.uris), np.asarray(test.X), [str(int(v)) for v in test.y])
    return uris, np.ascontiguousarray(pool.X[:subset]), truth, eval_set


class Oracle:
    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def label(self, uris: list[str]) -> dict[str, str]:
        return {u: self.truth[u] for u in uris}


def one(data: Any, config: AutoConfig) -> Report:
    uris, X, truth, eval_set = data
    with tempfile.TemporaryDirectory() as folder:
        return run_auto(uris, X, Oracle(truth), config, out_dir=folder, eval_set=eval_set)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--data", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--target", type=float, default=0.93)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--initial", type=int, default=30)
    parser.add_argument("--round-size", type=int, default=100)
    parser.add_argument("--head", default="logistic")
    parser.add_argument("--no-singles", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    data = digits() if args.data == "digits" else mnist(args.subset)
    base = {
        "target_accuracy": args.target,
        "budget": args.budget,
        "initial": args.initial,
        "round_size": args.round_size,
        "head": args.head,
    }
    result: dict[str, Any] = {"data": args.data, "pool": len(data[0]), **base, "seeds": seeds}
    started = time.perf_counter()
    singles: dict[str, list[int | None]] = {}
    if not args.no_singles:
        for name in DEFAULT_CANDIDATES:
            singles[name] = []
            for seed in seeds:
                config = AutoConfig(
                    strategies=(name,), seed=seed, spend="paper", plateau_rounds=10**6, **base
                )
                singles[name].append(labels_to_target(one(data, config), args.target))
            print(f"single {name}: {singles[name]}", file=sys.stderr, flush=True)
    filled = {n: [args.budget if v is None else v for v in vs] for n, vs in singles.items()}
    means = {n: float(np.mean(v)) for n, v in filled.items()}
    best = min(means, key=lambda n: means[n]) if means else None
    result["singles"] = {"labels_to_target": singles, "mean": means, "best_single": best}
    for label, changes in SETTINGS.items():
        runs = []
        errors: list[float] = []
        for seed in seeds:
            config = AutoConfig(
                strategies=DEFAULT_CANDIDATES, seed=seed, plateau_rounds=10**6, **base, **changes
            )
            report = one(data, config)
            gone = {r.strategy: r.round for r in report.rows if r.eliminated}
            errs = forecast_errors(report, 3)
            errors += _exp_refit(report) if label == "before" else errs["refit"]
            runs.append(
                {
                    "seed": seed,
                    "labels_to_target": labels_to_target(report, args.target),
                    "winner": report.winner,
                    "margin_eliminated_round": gone.get("margin"),
                    "eliminated": gone,
                    "labels_bought": report.labels_bought,
                }
            )
            print(f"{label} seed {seed}: {runs[-1]}", file=sys.stderr, flush=True)
        values = [r["labels_to_target"] or r["labels_bought"] for r in runs]
        mean = float(np.mean(values))
        result[label] = {
            "runs": runs,
            "labels_to_target_mean": mean,
            "censored": any(r["labels_to_target"] is None for r in runs),
            "vs_best_single": round(mean / means[best], 3) if best else None,
            "forecast_mae": round(float(np.mean(errors)), 3) if errors else None,
            "forecasts_counted": len(errors),
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


def _exp_refit(report: Report) -> list[float]:
    """``forecast_errors``' refit errors with the paper's exponential (the 'before' model)."""
    from alcli.agent import forecast

    history: dict[str, list[tuple[int, int, float]]] = {}
    for row in report.rows:
        history.setdefault(row.strategy, []).append((row.round, row.labels, row.accuracy))
    out = []
    for rows in history.values():
        rows.sort()
        for i in range(3, len(rows) - 1):
            if rows[i + 1][0] != rows[i][0] + 1:
                continue
            past = rows[: i + 1]
            fc = forecast([r[1] for r in past], [r[2] for r in past], rows[i + 1][1], model="exp")
            out.append(abs(fc.value - rows[i + 1][2]) * 100)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
