"""Coreset's greedy k-center on the real MNIST features: the projected row bound vs groups only.

The pattern of ``alcli auto``'s overhead part (``auto_mnist.py --parts overhead``): 100
random labels, then 8 rounds that each pick 100 by farthest-first and then label 700 more
(the picks and random others). Per round, the labeled rows' distances are applied once
twice from the last round's distances, then the 100 picks twice, each interleaved: with the
row bounds (``_kcenter._may_change`` and the projected block bound of ``_apply_labeled``)
and with the group bounds alone (the code before session 9). Prints seconds per part, the
ratios, whether the picks agree, and the largest relative difference of any distance.

    flock /work/wt/bench.lock /work/wt/timed.sh .venv/bin/python benchmarks/kcenter_mnist.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alcli._threads import single_threaded_blas
from alcli.strategies import _kcenter
from mnist_features import mnist_features


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--picks", type=int, default=100)
    parser.add_argument("--round-labels", type=int, default=700)
    parser.add_argument("--initial", type=int, default=100)
    args = parser.parse_args()
    pool, _ = mnist_features()
    x = np.ascontiguousarray(pool.X)
    n = x.shape[0]
    load = os.getloadavg()
    projected: list[float] = []
    real_project = _kcenter._Groups.project

    def timed_project(self: _kcenter._Groups, rows: np.ndarray) -> None:
        started = time.perf_counter()
        real_project(self, rows)
        projected.append(time.perf_counter() - started)

    _kcenter._Groups.project = timed_project  # type: ignore[method-assign]
    started = time.perf_counter()
    groups = _kcenter._Groups(x)
    group_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    labeled = np.zeros(n, dtype=bool)
    labeled[rng.choice(n, args.initial, replace=False)] = True
    seconds = {"labeled": 0.0, "labeled_groups_only": 0.0, "row_bound": 0.0, "groups_only": 0.0}
    same_picks, max_rel = True, 0.0
    per_round = []
    for rnd in range(args.rounds):
        with single_threaded_blas():
            seen = (groups._seen, groups._seen_sq)
            applied_by = {}
            sq_by = {}
            for variant in (
                ("row_bound", "groups_only") if rnd % 2 else ("groups_only", "row_bound")
            ):
                groups._seen, groups._seen_sq = seen
                started = time.perf_counter()
                sq_by[variant] = groups.to_labeled(x, labeled, row_bound=variant == "row_bound")
                applied_by[variant] = time.perf_counter() - started
            # keep the row-bound state (what auto uses) for the picks below
            groups._seen, groups._seen_sq = labeled.copy(), sq_by["row_bound"].copy()
            finite = np.isfinite(sq_by["groups_only"])  # the labeled rows' own (~0) aside
            finite[groups.position[np.flatnonzero(labeled)]] = False
            max_rel = max(
                max_rel,
                float(
                    np.max(
                        np.abs(sq_by["row_bound"][finite] - sq_by["groups_only"][finite])
                        / np.maximum(sq_by["groups_only"][finite], 1e-30)
                    )
                ),
            )
            applied = applied_by["row_bound"]
            seconds["labeled_groups_only"] += applied_by["groups_only"]
            out = {}
            order = ("row_bound", "groups_only") if rnd % 2 == 0 else ("groups_only", "row_bound")
            for variant in order:
                started = time.perf_counter()
                out[variant] = _kcenter._farthest_first(
                    groups, x, labeled, args.picks, row_bound=variant == "row_bound"
                )
                seconds[variant] += time.perf_counter() - started
        seconds["labeled"] += applied
        (picks, scores), (ref, ref_scores) = out["row_bound"], out["groups_only"]
        same_picks &= bool(np.array_equal(picks, ref))
        max_rel = max(max_rel, float(np.max(np.abs(scores - ref_scores) / ref_scores)))
        per_round.append(
            {
                "labeled": int(labeled.sum()),
                "labeled_s": {k: round(v, 3) for k, v in applied_by.items()},
            }
        )
        free = np.flatnonzero(~labeled)
        extra = rng.choice(np.setdiff1d(free, picks), args.round_labels - picks.size, replace=False)
        labeled[picks] = True
        labeled[extra] = True
    result = {
        "pool": n,
        "dim": int(x.shape[1]),
        "rounds": args.rounds,
        "picks_per_round": args.picks,
        "grouping_s": round(group_s, 2),
        "projection_s": round(sum(projected), 2),
        "labeled_row_bound_s": round(seconds["labeled"], 2),
        "labeled_groups_only_s": round(seconds["labeled_groups_only"], 2),
        "labeled_ratio": round(seconds["labeled"] / seconds["labeled_groups_only"], 3),
        "picks_row_bound_s": round(seconds["row_bound"], 2),
        "picks_groups_only_s": round(seconds["groups_only"], 2),
        "picks_ratio": round(seconds["row_bound"] / seconds["groups_only"], 3),
        "same_picks": same_picks,
        "max_distance_rel_diff": max_rel,
        "projected_dims": _kcenter.PROJECTED_DIMS,
        "per_round": per_round,
        "load_start": load,
        "load_end": os.getloadavg(),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
