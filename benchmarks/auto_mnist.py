"""Does the PSHEA agent earn its keep on real data? ``alcli auto`` against every strategy alone.

Real MNIST: pool = the 50k training digits, eval = the 10k test digits (given, not charged),
embedded once by alcli (MobileNetV2, 112 px, see ``mnist_features.py``); a logistic head on
standardized features. Every run starts from the same ``initial`` random labels per seed (the
agent draws them from the seed alone) and buys ``round_size`` labels per round until the
returned model reaches the target accuracy or the budget is spent.

Parts (``--parts``, all by default):

``singles``   random, then each candidate strategy, run alone: ``run_auto`` with that one
              candidate (``paper`` spend, so no second head; plateau rule off, so a slow
              strategy is measured, not stopped). A strategy still short of the target with
              as many labels as random needed on that seed (``--single-cap`` times that) is
              stopped there: it cannot beat random, and coreset at 50k x 1280 costs seconds
              per round; it reports null.
``pooled``    ``alcli auto`` with the default candidates and the default spend (``pooled``:
              every strategy picks with the head on every label bought).
``shared``    the same with ``--spend shared`` (each strategy picks with a head on its own
              set; the default before session 8).
``paper``     the same with ``--spend paper`` (Algorithm 1 as written).
``overhead``  the agent's own seconds (heads, forecasts, selection, not the oracle) for the
              default candidates over 8 rounds of 700 labels on the whole pool.

``labels_to_target`` counts unique labels bought (initial set included) when the model the run
returns reaches the target: pooled and shared spend, the head on every label bought; paper spend and
single strategies, the winner's head. ``null`` = not reached (means then count the labels
bought when the run stopped, a lower bound, and say ``censored``). ``forecast_mae`` is
|forecast - actual| in accuracy points for the one-round-ahead forecasts made at the end of
rounds >= 3 (the default spend's runs; the others' are reported too): the agent's
forecaster (``alcli.agent.forecast``) on a strategy's history, evaluated at the set size the
strategy actually had one round later (``forecast_mae_recorded`` uses the forecast as the agent
logged it, where its horizon matched that size).

``--head`` picks the head every run trains (``alcli.learner.semisup``). A graph head's kNN
graph is loaded once from ``benchmarks/.work`` (``--graph-backend``, faiss by default: the
file ``label_efficiency.py`` keeps) and given to every run, so ``agent_overhead_s`` leaves its
build out (the JSON's ``graph.build_s`` says what it cost once). ``--single-candidates`` runs
fewer strategies alone than race (say which when the singles are cut for time).

Every run's summary is cached under ``--work`` by its settings (auto runs also by the agent's
source), so a rerun only redoes what changed; ``--fresh`` recomputes everything.

    .venv/bin/python benchmarks/auto_mnist.py --json
    .venv/bin/python benchmarks/auto_mnist.py --parts pooled --seeds 0 --json
    flock /work/wt/bench.lock /work/wt/timed.sh .venv/bin/python benchmarks/auto_mnist.py \
        --parts overhead --json      # the timing alone, under the lock
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alcli.agent import AutoConfig, EvalSet, Report, forecast, run_auto
from alcli.agent.config import SPLIT_MODES
from alcli.autorun import DEFAULT_CANDIDATES
from alcli.learner import PoolGraph
from alcli.learner.semisup import GRAPH_KINDS

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "auto_mnist"
PLOT = ROOT / "benchmarks" / "auto_mnist_curves.png"
PARTS = ("singles", "pooled", "shared", "paper", "overhead")
#: The spend ``alcli auto`` uses unless told: its part gives the unprefixed ``auto_*`` keys.
DEFAULT_SPEND = AutoConfig.__dataclass_fields__["spend"].default
#: Rounds from which forecasts count towards ``forecast_mae`` (the issue: "after round 3").
FORECAST_FROM_ROUND = 3
NO_PLATEAU = 1_000_000


@dataclass
class Pool:
    """What every run shares: the pool's URIs and embeddings, the truth, the eval set."""

    uris: list[str]
    X: np.ndarray
    truth: dict[str, str]
    eval_set: EvalSet
    source: str
    #: The pool's kNN graph for a graph head, built once (``load_graph``), not once per run.
    graph: PoolGraph | None = None


class MemoryOracle:
    """The simulation oracle: answers from the known labels, instantly."""

    def __init__(self, truth: dict[str, str]) -> None:
        self.truth = truth

    def label(self, uris: Sequence[str]) -> dict[str, str]:
        return {u: self.truth[u] for u in uris}


def real_pool(subset: int | None) -> Pool:
    """MNIST features from the alcli cache (embeds what is missing: minutes on a cold cache)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mnist_features import mnist_features

    pool, test = mnist_features()
    n = len(pool.uris) if subset is None else min(subset, len(pool.uris))
    uris = list(pool.uris[:n])
    truth = {u: str(int(v)) for u, v in zip(uris, pool.y[:n], strict=True)}
    eval_set = EvalSet(list(test.uris), np.asarray(test.X), [str(int(v)) for v in test.y])
    return Pool(uris, np.ascontiguousarray(pool.X[:n]), truth, eval_set, "mnist")


def load_graph(pool: Pool, backend: str) -> PoolGraph:
    """The pool's kNN graph, shared with ``label_efficiency.py``: one file in ``.work`` per
    pool shape and backend (an exact build at 50k took 676 s at load ~20, session 8; the
    faiss one ~30 s), so every run with a graph head starts from the same graph."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if pool.source != "mnist":
        from alcli.learner import build_graph

        return build_graph(pool.X, backend=backend)
    from label_efficiency import cached_graph

    return cached_graph(pool.X, backend)


def synthetic_pool(n: int, d: int = 128, n_classes: int = 10, seed: int = 0) -> Pool:
    """ReLU'd Gaussian blobs, for trying the script while the real embedding runs."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, d), dtype=np.float32) * 0.35

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, size=m)
        X = rng.standard_normal((m, d), dtype=np.float32) + centers[y]
        return np.maximum(X, 0), y

    X, y = draw(n)
    eval_X, eval_y = draw(max(1000, n // 5))
    uris = [f"synthetic://pool/{i:07d}" for i in range(n)]
    truth = {u: str(int(v)) for u, v in zip(uris, y, strict=True)}
    eval_set = EvalSet(
        [f"synthetic://eval/{i}" for i in range(len(eval_y))],
        eval_X,
        [str(int(v)) for v in eval_y],
    )
    return Pool(uris, X, truth, eval_set, f"synthetic {n}x{d}")


def run(pool: Pool, config: AutoConfig, out_dir: Path) -> tuple[Report, float]:
    """One fresh ``run_auto`` in ``out_dir`` (emptied first) and its wall seconds."""
    shutil.rmtree(out_dir, ignore_errors=True)
    started = time.perf_counter()
    report = run_auto(
        pool.uris,
        pool.X,
        MemoryOracle(pool.truth),
        config,
        out_dir=out_dir,
        eval_set=pool.eval_set,
        graph=pool.graph,
    )
    return report, time.perf_counter() - started


def agent_digest() -> str:
    """Identity of the code a run depends on (the agent, the heads, the strategies): a cached
    run is reused only while it is unchanged (session 12: a change to the heads alone had
    left the cached single-strategy runs in place)."""
    import alcli.agent
    import alcli.learner
    import alcli.strategies

    digest = hashlib.sha256()
    for package in (alcli.agent, alcli.learner, alcli.strategies):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_run(
    args: argparse.Namespace, pool: Pool, config: AutoConfig, name: str, *, code: str = ""
) -> dict[str, Any]:
    """``summarize`` of one run, reused from ``args.work`` when its settings (and ``code``) match.

    Reruns then only redo what changed (the singles take most of the time); ``--fresh``
    recomputes everything. The budget only decides where a deterministic run stops, so a
    cached run under another budget still holds when it reached the target within this one,
    or stopped at exactly this budget.
    """
    settings = {k: v for k, v in config.as_dict().items() if k != "budget"}
    if pool.graph is not None:  # which graph the head read
        settings["graph"] = pool.graph.backend
    key = f"{pool.source}|{code}|{json.dumps(settings, sort_keys=True)}"
    cache = args.work / "summaries" / f"{name}.json"
    if not args.fresh and cache.exists():
        saved = json.loads(cache.read_text())
        old = saved["summary"]
        reached = old["labels_to_target"] is not None and old["labels_to_target"] <= config.budget
        same_stop = old["stop_reason"] == "budget" and saved.get("budget") == config.budget
        if saved.get("key") == key and (reached or same_stop):
            return {**old, "cached": True}
    report, seconds = run(pool, config, args.work / "runs" / name)
    summary = summarize(report, args.target, seconds)
    summary["forecast_errors"] = forecast_errors(report, FORECAST_FROM_ROUND)
    summary["timings"] = {k: round(v, 2) for k, v in report.timings.items()}
    summary["strategy_seconds"] = {k: round(v, 2) for k, v in report.strategy_seconds.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "budget": config.budget, "summary": summary}))
    return summary


def model_curve(report: Report) -> list[tuple[int, float]]:
    """(labels bought, accuracy of the model the run would return) after every round."""
    if report.spend in SPLIT_MODES:
        return [(int(s["labels"]), float(s["accuracy"])) for s in report.shared_accuracy]
    by_round: dict[int, tuple[int, float]] = {}
    for row in report.rows:
        best = by_round.get(row.round)
        # paper: the returned head is the best survivor's (the winner rule's first key)
        if best is None or row.accuracy > best[1]:
            by_round[row.round] = (row.labels_bought_total, row.accuracy)
    return [by_round[r] for r in sorted(by_round)]


def labels_to_target(report: Report, target: float) -> int | None:
    """Labels bought when the returned model first reaches ``target``; None if it never did."""
    for labels, acc in model_curve(report):
        if acc >= target:
            return labels
    return None


def forecast_errors(report: Report, from_round: int) -> dict[str, list[float]]:
    """One-round-ahead errors (accuracy points) of forecasts made at the end of rounds >= from.

    ``refit``: ``forecast`` on the history up to round r, at the set size of round r + 1.
    ``recorded``: the agent's logged forecast, where its horizon equals that set size.
    """
    history: dict[str, list[tuple[int, int, float, float | None, int | None]]] = {}
    for row in report.rows:
        history.setdefault(row.strategy, []).append(
            (row.round, row.labels, row.accuracy, row.forecast, row.forecast_at)
        )
    refit: list[float] = []
    recorded: list[float] = []
    for rows in history.values():
        rows.sort()
        for i in range(len(rows) - 1):
            rnd, _, _, logged, logged_at = rows[i]
            nxt_round, nxt_n, nxt_acc, _, _ = rows[i + 1]
            if rnd < from_round or nxt_round != rnd + 1:
                continue
            past = rows[: i + 1]
            fc = forecast([r[1] for r in past], [r[2] for r in past], nxt_n)
            refit.append(abs(fc.value - nxt_acc) * 100)
            if logged is not None and logged_at == nxt_n:
                recorded.append(abs(logged - nxt_acc) * 100)
    return {"refit": refit, "recorded": recorded}


def summarize(report: Report, target: float, seconds: float) -> dict[str, Any]:
    """The JSON-ready facts of one run."""
    return {
        "labels_to_target": labels_to_target(report, target),
        "stop_reason": report.stop_reason,
        "winner": report.winner,
        "final_accuracy": round(report.final_accuracy, 4),
        "labels_bought": report.labels_bought,
        "rounds": report.rounds,
        "curve": [[n, round(a, 4)] for n, a in model_curve(report)],
        "eliminated": [r.strategy for r in report.rows if r.eliminated],
        "overhead_s": round(report.timings["overhead"], 2),
        "seconds": round(seconds, 1),
    }


def mean_labels(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean labels to target over seeds. A run that never reached it counts with the labels it
    had bought when it stopped (a lower bound), and the mean is flagged ``censored``."""
    values = [r["labels_to_target"] for r in runs]
    filled = [r["labels_bought"] if v is None else v for r, v in zip(runs, values, strict=True)]
    return {
        "per_seed": values,
        "mean": round(float(np.mean(filled)), 1),
        "censored": any(v is None for v in values),
    }


def base_config(args: argparse.Namespace, **changes: Any) -> AutoConfig:
    values: dict[str, Any] = {
        "target_accuracy": args.target,
        "budget": args.budget,
        "strategies": tuple(args.candidates),
        "initial": args.initial,
        "round_size": args.round_size,
        "seed": 0,
        "spend": DEFAULT_SPEND,
        "head": args.head,
    }
    if args.head_components is not None:  # else AutoConfig's default
        values["head_components"] = args.head_components
    values.update(changes)
    return AutoConfig(**values)


def part_singles(args: argparse.Namespace, pool: Pool) -> dict[str, Any]:
    """Every candidate and random alone, per seed, cached on disk by their settings.

    Random runs first; a strategy that has not reached the target with ``args.single_cap``
    times the labels random needed on that seed cannot beat random there, so its run stops
    at that cap (a k-center call costs seconds on the whole pool, and coreset would otherwise
    run every round to the budget). Such a run reports null, like one that hit the budget.
    """
    alone = args.single_candidates or args.candidates
    names = ["random", *[n for n in dict.fromkeys(alone) if n != "random"]]
    results: dict[str, Any] = {}
    random_labels: dict[int, int | None] = {}
    for name in names:
        per_seed = []
        for seed in args.seeds:
            budget = args.budget
            if name != "random" and random_labels.get(seed) is not None:
                cap = math.ceil(args.single_cap * random_labels[seed] / args.round_size)
                budget = min(budget, cap * args.round_size)
            config = base_config(
                args,
                strategies=(name,),
                seed=seed,
                spend="paper",
                plateau_rounds=NO_PLATEAU,
                budget=budget,
            )
            summary = cached_run(args, pool, config, f"single-{name}-{seed}", code=agent_digest())
            per_seed.append(summary)
            if name == "random":
                random_labels[seed] = summary["labels_to_target"]
            log(
                args,
                f"single {name} seed {seed}: {summary['labels_to_target']} labels "
                f"({summary['stop_reason']}, {summary['seconds']:.0f} s)",
            )
        results[name] = {
            "labels_to_target": mean_labels(per_seed),
            "runs": per_seed,
        }
    return results


def part_auto(args: argparse.Namespace, pool: Pool, spend: str) -> dict[str, Any]:
    """The agent with the default candidates, one run per seed."""
    runs = []
    errors: dict[str, list[float]] = {"refit": [], "recorded": []}
    for seed in args.seeds:
        name = f"auto-{spend}-{seed}"
        config = base_config(args, seed=seed, spend=spend)
        summary = cached_run(args, pool, config, name, code=agent_digest())
        for k, v in summary["forecast_errors"].items():
            errors[k].extend(v)
        runs.append(summary)
        log(
            args,
            f"auto {spend} seed {seed}: {summary['labels_to_target']} labels, winner "
            f"{summary['winner']} ({summary['stop_reason']}, {summary['seconds']:.0f} s)",
        )
        curves = args.work / "runs" / name / "curves.png"
        if spend == DEFAULT_SPEND and seed == args.seeds[0] and args.plot and curves.exists():
            shutil.copyfile(curves, args.plot)
    return {
        "labels_to_target": mean_labels(runs),
        "winner": [r["winner"] for r in runs],
        "forecast_mae": _mean(errors["refit"]),
        "forecast_mae_recorded": _mean(errors["recorded"]),
        "forecasts_counted": len(errors["refit"]),
        "runs": runs,
    }


def part_overhead(args: argparse.Namespace, pool: Pool) -> dict[str, Any]:
    """The agent's own time, the oracle free: the default candidates, 8 rounds of 700."""
    rounds, round_size = 8, 700
    config = base_config(
        args,
        target_accuracy=1.0,
        budget=args.initial + rounds * round_size,
        round_size=round_size,
        max_rounds=rounds,
        plateau_rounds=NO_PLATEAU,
    )
    summary = cached_run(args, pool, config, "overhead", code=agent_digest())
    return {
        "agent_overhead_s": summary["timings"]["overhead"],
        "wall_s": summary["seconds"],
        "pool": len(pool.uris),
        "dim": int(pool.X.shape[1]),
        "strategies": list(config.strategies),
        "rounds": summary["rounds"],
        "round_size": round_size,
        "eliminated": summary["eliminated"],
        "timings": summary["timings"],
        "strategy_seconds": summary["strategy_seconds"],
        "cached": summary.get("cached", False),
    }


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def log(args: argparse.Namespace, message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--target", type=float, default=0.93)
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--round-size", type=int, default=100)
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES))
    parser.add_argument(
        "--single-candidates",
        default="",
        help="comma list: the strategies run alone (default: --candidates); the JSON says which",
    )
    parser.add_argument("--subset", type=int, default=None, help="first N pool items only")
    parser.add_argument("--head", default="logistic", help="a head kind (semisup.HEAD_KINDS)")
    parser.add_argument(
        "--head-components",
        type=int,
        default=None,
        help="principal components of the graph heads' space (0: every column; default: alcli's)",
    )
    parser.add_argument(
        "--graph-backend",
        default="faiss",
        choices=("exact", "faiss", "usearch"),
        help="the kNN graph of a graph head (built once, kept in benchmarks/.work)",
    )
    parser.add_argument("--synthetic", type=int, default=None, help="N blob items instead")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--plot", default=str(PLOT), help="copy seed 0's curves.png here")
    parser.add_argument(
        "--single-cap",
        type=float,
        default=1.0,
        help="stop a single strategy at this multiple of random's labels (same seed)",
    )
    parser.add_argument("--fresh", action="store_true", help="recompute cached single runs")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.candidates = [s for s in args.candidates.split(",") if s]
    args.single_candidates = [s for s in args.single_candidates.split(",") if s]
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")

    load_start = os.getloadavg()
    started = time.perf_counter()
    pool = synthetic_pool(args.synthetic) if args.synthetic else real_pool(args.subset)
    if args.head in GRAPH_KINDS:
        pool.graph = load_graph(pool, args.graph_backend)
    # ``seconds``: wall seconds of each part in this invocation, and ``<part>_runs``: the
    # seconds its runs took when computed (the same, unless they came from the cache).
    seconds: dict[str, float] = {"load": round(time.perf_counter() - started, 1)}
    result: dict[str, Any] = {
        "pool": len(pool.uris),
        "eval": len(pool.eval_set.uris),
        "dim": int(pool.X.shape[1]),
        "source": pool.source,
        "target": args.target,
        "budget": args.budget,
        "initial": args.initial,
        "round_size": args.round_size,
        "seeds": args.seeds,
        "candidates": args.candidates,
        "single_candidates": args.single_candidates or args.candidates,
        "head": args.head,
    }
    if pool.graph is not None:
        # built once per pool, outside every run: agent_overhead_s leaves it out
        result["graph"] = {"backend": pool.graph.backend, "build_s": round(pool.graph.seconds, 1)}
    for part in parts:
        started = time.perf_counter()
        if part == "singles":
            singles = part_singles(args, pool)
            means = {n: s["labels_to_target"]["mean"] for n, s in singles.items()}
            best = min((n for n in means if n != "random"), key=lambda n: means[n])
            result["singles"] = singles
            result["best_single"] = best
            result["random_labels_to_target"] = singles["random"]["labels_to_target"]
        elif part == "overhead":
            result["overhead"] = part_overhead(args, pool)
            result["agent_overhead_s"] = result["overhead"]["agent_overhead_s"]
        else:
            result[part] = part_auto(args, pool, part)
        seconds[part] = round(time.perf_counter() - started, 1)
        # what the part's runs cost when they were computed (cached runs cost ~0 now)
        runs = (
            [r for single in result["singles"].values() for r in single["runs"]]
            if part == "singles"
            else [{"seconds": result["overhead"]["wall_s"]}]
            if part == "overhead"
            else result[part]["runs"]
        )
        seconds[f"{part}_runs"] = round(sum(r["seconds"] for r in runs), 1)

    if "singles" in result:
        best_mean = result["singles"][result["best_single"]]["labels_to_target"]["mean"]
        random_mean = result["random_labels_to_target"]["mean"]
        for spend in ("pooled", "shared", "paper"):
            if spend not in result:
                continue
            auto_mean = result[spend]["labels_to_target"]["mean"]
            prefix = "" if spend == DEFAULT_SPEND else f"{spend}_"
            result[f"{prefix}auto_vs_best_single"] = _ratio(auto_mean, best_mean)
            result[f"{prefix}auto_vs_random"] = _ratio(auto_mean, random_mean)
            worse = [
                w
                for w in result[spend]["winner"]
                if w in result["singles"]
                and result["singles"][w]["labels_to_target"]["mean"] > random_mean
            ]
            result[spend]["winners_worse_than_random"] = worse
    if "singles" in result:
        result["single_labels_to_target"] = {
            name: single["labels_to_target"] for name, single in result["singles"].items()
        }
    for spend in ("pooled", "shared", "paper"):
        if spend in result:
            prefix = "" if spend == DEFAULT_SPEND else f"{spend}_"
            result[f"{prefix}auto_labels_to_target"] = result[spend]["labels_to_target"]
            result[f"{prefix}forecast_mae"] = result[spend]["forecast_mae"]
    result["winner"] = {
        spend: result[spend]["winner"] for spend in ("pooled", "shared", "paper") if spend in result
    }
    result["seconds"] = seconds
    result["machine"] = {
        "cores": os.cpu_count(),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
