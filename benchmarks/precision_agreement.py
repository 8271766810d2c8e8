"""Issue 14: does active learning on bf16 embeddings decide as it does on fp32 ones?

MNIST, MobileNetV2 at 112 px, the same digits embedded twice by ``alcli.embedding.embed``
(``precision_features.py``: fp32, and ``--precision bf16``, autocast with the stem in fp32):

- ``cosine``: per-item cosine similarity of the bf16 embedding to the fp32 one (mean, worst);
- ``picks_overlap``: the demo's selections (scripts/demo.sh: a 3,000-digit pool, 100 labels,
  every 30th digit) made on each, margin and coreset at the demo's budget (10) and at its
  round size (100): the share of picks both make;
- ``label_efficiency``: accuracy curves of margin (and random) with a logistic head, the
  benchmark of ``label_efficiency.py`` on a subset (--train digits, --test to evaluate), per
  seed on both; ``max_gap`` (largest |bf16 - fp32| of the mean curves) against
  ``seed_std`` (the mean over rounds of the curves' std across seeds).

    .venv/bin/python benchmarks/precision_agreement.py --json > benchmarks/precision_agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alcli.learner import fit_scaler
from alcli.selection import pick
from label_efficiency import run_curve
from mnist_features import Features
from precision_features import features

DEMO_POOL, DEMO_EVERY = 3000, 30


def cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) * (
        b / np.linalg.norm(b, axis=1, keepdims=True)
    )
    per_item = cos.sum(axis=1)
    return {"mean": round(float(per_item.mean()), 5), "worst": round(float(per_item.min()), 5)}


def picks_overlap(runs: dict[str, Any], other: str = "bf16") -> dict[str, float]:
    """Share of the demo's picks made on fp32 and on ``other``, by strategy and budget."""
    uris = runs["fp32"].uris[:DEMO_POOL]
    labels = {uris[i]: str(runs["fp32"].y[i]) for i in range(0, DEMO_POOL, DEMO_EVERY)}
    out = {}
    for strategy in ("margin", "coreset"):
        for budget in (10, 100):
            picked = [
                set(
                    pick(
                        strategy=strategy,
                        budget=budget,
                        uris=uris,
                        embeddings=runs[p].X[:DEMO_POOL],
                        labels=labels,
                        seed=0,
                    ).uris
                )
                for p in ("fp32", other)
            ]
            out[f"{strategy}@{budget}"] = round(len(picked[0] & picked[1]) / budget, 3)
    return out


def curves(pool: Any, test: Any, name: str, seeds: int, rounds: int) -> np.ndarray:
    scaler = fit_scaler(pool.X)
    per_seed = []
    for seed in range(seeds):
        initial = np.random.default_rng(seed).choice(len(pool.X), 100, replace=False)
        per_seed.append(
            run_curve(
                name,
                pool.X,
                pool.y,
                test.X,
                test.y,
                scaler,
                initial=initial,
                rounds=rounds,
                batch=100,
                seed=seed,
            )
        )
    return np.array(per_seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args()
    train = {p: features("train", args.train, p) for p in ("fp32", "bf16")}
    test = {p: features("test", args.test, p) for p in ("fp32", "bf16")}
    assert train["fp32"].uris == train["bf16"].uris
    assert test["fp32"].uris == test["bf16"].uris
    rng = np.random.default_rng(0)
    for split in (train, test):
        fp32, bf16 = split["fp32"], split["bf16"]
        sigma = 0.1 * float(np.sqrt(np.mean((bf16.X - fp32.X) ** 2)))
        noisy = fp32.X + rng.normal(0.0, sigma, fp32.X.shape).astype(np.float32)
        split["control"] = Features(fp32.uris, noisy, fp32.y)
    report: dict[str, Any] = {
        "train": args.train,
        "test": args.test,
        "cosine": cosine(
            np.concatenate([train["bf16"].X, test["bf16"].X]),
            np.concatenate([train["fp32"].X, test["fp32"].X]),
        ),
        "picks_overlap": picks_overlap(train),
        "control_cosine": cosine(train["control"].X, train["fp32"].X),
        "control_picks_overlap": picks_overlap(train, "control"),
        "label_efficiency": {},
    }
    for name in ("margin", "random"):
        got = {p: curves(train[p], test[p], name, args.seeds, args.rounds) for p in train}
        gap = np.abs(got["bf16"].mean(axis=0) - got["fp32"].mean(axis=0))
        control = np.abs(got["control"].mean(axis=0) - got["fp32"].mean(axis=0))
        report["label_efficiency"][name] = {
            "control_max_gap": round(float(control.max()), 4),
            "labels": [100 + 100 * r for r in range(args.rounds + 1)],
            **{f"{p}_mean": [round(float(a), 4) for a in c.mean(axis=0)] for p, c in got.items()},
            "max_gap": round(float(gap.max()), 4),
            "seed_std": round(float(got["fp32"].std(axis=0).mean()), 4),
        }
        print(f"{name}: max gap {gap.max():.4f}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1) if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
