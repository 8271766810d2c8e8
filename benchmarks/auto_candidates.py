"""What each candidate's picks did to the shared head of a ``pooled`` ``alcli auto`` run.

Leave-one-strategy-out, round by round, from a finished run's ``state.json`` (which records
each label's buyers, ``RunState.picked``): the head on every label bought after round r, and
the same head without the rows only strategy s picked (its picks up to round r that no other
survivor also picked). A strategy's contribution is the accuracy the shared head loses
without them, on the run's eval set (MNIST: the 10,000 test digits), with its paired (McNemar)
standard error: the eval rows the two heads disagree on. Both heads are fitted to convergence
from a cold start, and again the way the agent's rule fits them (warm from the shared head,
``race.EVIDENCE_MAX_ITER`` iterations), to see whether the cheap fit keeps the sign. (The
agent's rule, ``Race.leave_out``, also keeps rows an eliminated strategy picked; on a run with
no elimination the two agree.)

``--random`` instead compares k of each strategy's own picks with k of the initial random
labels left out (k ≤ half the initial set): the reference session 10 measured and rejected.

    python benchmarks/auto_candidates.py RUN_DIR [RUN_DIR ...] --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from alcli.agent.race import EVIDENCE_MAX_ITER  # noqa: E402
from alcli.agent.rules import leave_out_contribution  # noqa: E402
from alcli.learner import fit_head, fit_scaler, head_space  # noqa: E402
from auto_mnist import real_pool  # noqa: E402


def rounds_of(state: dict[str, Any], row_of: dict[str, int]) -> list[tuple[int, list[int]]]:
    """(round, every training row bought by its end), from the labels' buying order."""
    bought = [row_of[uri] for uri in state["labels"]]
    return [(p["round"], bought[: p["labels"]]) for p in state["shared"] if p["round"] >= 1]


def analyse(
    run_dir: Path,
    space: Any,
    eval_X: np.ndarray,
    eval_y: np.ndarray,
    pool: Any,
    args_random: bool = False,
) -> Any:
    state = json.loads((run_dir / "state.json").read_text())
    row_of = {u: i for i, u in enumerate(pool.uris)}
    labels = {row_of[u]: v for u, v in state["labels"].items()}
    picked = {k: set(v) for k, v in state["picked"].items()}
    alive_by_round = {}
    for row in state["rows"]:
        alive_by_round.setdefault(row["round"], []).append(row["strategy"])

    def fit(rows: list[int], init: Any = None, max_iter: int = 1000) -> Any:
        arr = np.asarray(rows, dtype=np.int64)
        return fit_head(space, arr, [labels[r] for r in rows], init=init, max_iter=max_iter)

    out = []
    for rnd, rows in rounds_of(state, row_of):
        have = set(rows)
        alive = alive_by_round[rnd]
        full = fit(rows)
        full_pred = full.classes[np.argmax(full.predict_proba(eval_X), axis=1)]
        entry: dict[str, Any] = {
            "round": rnd,
            "labels": len(rows),
            "accuracy": float(np.mean(full_pred == eval_y)),
        }
        for name in alive:
            others = set().union(*(picked[o] for o in alive if o != name))
            mine = (picked[name] & have) - others
            without = [r for r in rows if r not in mine]
            cold = None if args_random else fit(without)
            warm = None if args_random else fit(without, init=full, max_iter=EVIDENCE_MAX_ITER)
            res: dict[str, Any] = {"exclusive": len(mine)}
            for kind, head in (("cold", cold), ("warm", warm)) if not args_random else ():
                pred = head.classes[np.argmax(head.predict_proba(eval_X), axis=1)]
                delta, se = leave_out_contribution(full_pred == eval_y, pred == eval_y)
                res[kind] = [round(delta * 100, 3), round(se * 100, 3)]
            if args_random:
                # against as many random labels: k of its picks vs k of the initial random
                # rows left out, the two heads paired on the eval rows
                k = min(len(mine), len(state["initial_rows"]) // 2)
                rng = np.random.default_rng(rnd)
                drop_s = set(rng.permutation(sorted(mine))[:k].tolist())
                drop_r = set(rng.permutation(state["initial_rows"])[:k].tolist())
                wo_s = fit(
                    [r for r in rows if r not in drop_s], init=full, max_iter=EVIDENCE_MAX_ITER
                )
                wo_r = fit(
                    [r for r in rows if r not in drop_r], init=full, max_iter=EVIDENCE_MAX_ITER
                )
                ps = wo_s.classes[np.argmax(wo_s.predict_proba(eval_X), axis=1)]
                pr = wo_r.classes[np.argmax(wo_r.predict_proba(eval_X), axis=1)]
                d, e = leave_out_contribution(pr == eval_y, ps == eval_y)
                ds, _ = leave_out_contribution(full_pred == eval_y, ps == eval_y)
                dr, _ = leave_out_contribution(full_pred == eval_y, pr == eval_y)
                res["vs_random"] = [
                    k,
                    round(ds * 100, 3),
                    round(dr * 100, 3),
                    round(d * 100, 3),
                    round(e * 100, 3),
                ]
            entry[name] = res
        out.append(entry)
        print(run_dir.name, json.dumps(entry), file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--random", action="store_true", help="each against random labels")
    args = parser.parse_args()
    pool = real_pool(None)
    space = head_space("logistic", pool.X, scaler=fit_scaler(pool.X))
    eval_X = np.asarray(pool.eval_set.embeddings)
    eval_y = np.asarray(pool.eval_set.labels)
    result = {str(run): analyse(run, space, eval_X, eval_y, pool, args.random) for run in args.runs}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
