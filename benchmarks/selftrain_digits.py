"""The ``graph_selftrain`` head's variants on a second data set, so a choice is not tuned on MNIST.

scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, UCI; the pixels are the
features), split as ``auto_rules.py`` does: a 1,297-item pool and a 500-item eval set. Each
variant (``semisup.SELFTRAIN["graph_selftrain"]`` overrides, as in ``label_screen.py``) runs
the benchmark's loop (``fit_head`` on the head's space, the refitted head picks) from the
same random initial labels per seed, then rounds of ``--batch``; prints, per variant, the
mean accuracy curve and its paired difference from the first variant (mean and standard
error over the seeds, in points).

    python benchmarks/selftrain_digits.py --seeds 20 --strategy dbal \\
        '{"name": "shipped"}' '{"name": "weight", "weight": "balanced"}'
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from alcli import strategies
from alcli.learner import evaluate, fit_head, head_space, semisup


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool and eval rows, the split of ``auto_rules.digits``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    X = data.data.astype(np.float32)[order]
    y = data.target[order]
    return X[:1297], y[:1297], X[1297:], y[1297:]


def curve(space, X, y, Xe, ye, strategy, seed, initial, batch, rounds) -> list[float]:
    labeled = np.zeros(len(X), dtype=bool)
    labeled[np.random.default_rng(seed).choice(len(X), initial, replace=False)] = True
    out, head = [], None
    for r in range(rounds + 1):
        rows = np.flatnonzero(labeled)
        head = fit_head(space, rows, y[rows], init=head)
        out.append(evaluate(head, Xe, ye).accuracy)
        if r == rounds:
            break
        picks = strategies.run(
            strategy,
            budget=batch,
            probs=head.predict_proba(space.pool),
            embeddings=X,
            labeled=labeled,
            seed=seed * 1000 + r,
        )
        labeled[picks] = True
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="JSON objects: a name and SELFTRAIN overrides")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategy", default="dbal")
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    X, y, Xe, ye = digits()
    space = head_space("graph_selftrain", X)
    eval_rows = space.rows_for(Xe)
    shipped = dict(semisup.SELFTRAIN["graph_selftrain"])
    results = []
    for text in args.variants:
        variant = json.loads(text)
        overrides = {k: v for k, v in variant.items() if k != "name"}
        semisup.SELFTRAIN["graph_selftrain"] = {**shipped, **overrides}
        acc = np.array(
            [
                curve(
                    space,
                    X,
                    y,
                    eval_rows,
                    ye,
                    args.strategy,
                    seed,
                    args.initial,
                    args.batch,
                    args.rounds,
                )
                for seed in range(args.seeds)
            ]
        )
        results.append((variant, acc))
        print(variant["name"], np.round(acc.mean(axis=0), 4).tolist(), file=sys.stderr, flush=True)
    semisup.SELFTRAIN["graph_selftrain"] = shipped
    base = results[0][1]
    labels = [args.initial + r * args.batch for r in range(args.rounds + 1)]
    rows = []
    for variant, acc in results:
        diff = 100 * (acc - base)
        rows.append(
            {
                "variant": variant,
                "labels": labels,
                "accuracy_mean": [round(float(a), 4) for a in acc.mean(axis=0)],
                "diff_points_mean": [round(float(a), 2) for a in diff.mean(axis=0)],
                "diff_points_se": [
                    round(float(a), 2) for a in diff.std(axis=0, ddof=1) / np.sqrt(len(acc))
                ],
            }
        )
    print(json.dumps({"strategy": args.strategy, "seeds": args.seeds, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
