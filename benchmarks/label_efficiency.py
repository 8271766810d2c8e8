"""How many labels each strategy and head need on MNIST: the zoo's quality, measured.

Frozen MobileNetV2 embeddings at 112 px (see ``mnist_features.py``), pool = 50k training
digits, eval = 10k test digits. Every (strategy, head) starts from the same 100 random labels
(per seed), then buys 100 per round for 10 rounds; random with the logistic head also runs on
to ``--random-to`` labels (2,000). Heads (``--heads``): logistic, graph, selftrain
(``alcli.learner.semisup``); committees (BALD, vote entropy) are Laplace posterior samples of
the head unless ``--posterior bootstrap``. The kNN graph of the ``graph`` head is built once
per pool and cached under ``benchmarks/.work``.
Prints JSON: each run's mean accuracy curve over the seeds (``curves["strategy/head"]``),
``labels_to_random_2000`` (labels needed to match random-logistic's accuracy at 2,000 labels,
linearly interpolated between rounds; null when never reached), the per-round comparison of
BALD with random (``bald_vs_random``), and the old ``labels_to_reach_random_final``.

    python benchmarks/label_efficiency.py --json --plot benchmarks/label_efficiency.png

``--random-heads none --reuse earlier.json`` reads random's curve from an earlier run instead of
running it again; ``--selftrain JSON`` overrides ``graph_selftrain``'s settings (screening);
``--components N`` keeps N principal components of the graph space (0: every column; default
``semisup.GRAPH_SPACE_COMPONENTS``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from alcli import strategies
from alcli.learner import (
    HeadSpace,
    build_graph,
    evaluate,
    fit_head,
    fit_scaler,
    head_space,
    laplace_committee,
    train_committee,
)
from alcli.learner.graph import PoolGraph
from alcli.learner.semisup import GRAPH_KINDS, GRAPH_SPACE_COMPONENTS, SELFTRAIN
from mnist_features import WORK, mnist_features


def run_curve(
    name: str,
    space: HeadSpace,
    X: np.ndarray,
    y: np.ndarray,
    Xe: np.ndarray,
    ye: np.ndarray,
    *,
    initial: np.ndarray,
    rounds: int,
    batch: int,
    seed: int,
    posterior: str,
) -> list[float]:
    """Accuracy after the initial set and after each round, for one strategy, head and seed."""
    info = strategies.get(name)
    labeled = np.zeros(len(X), dtype=bool)
    labeled[initial] = True
    curve = []
    head = None
    for r in range(rounds + 1):
        rows = np.flatnonzero(labeled)
        head = fit_head(space, rows, y[rows], init=head)
        curve.append(evaluate(head, Xe, ye).accuracy)
        if r == rounds:
            break
        probs = head.predict_proba(space.pool) if "probs" in info.needs else None
        committee = None
        if "committee" in info.needs:
            members = (
                laplace_committee(
                    head,
                    space.pool[rows],
                    k=5,
                    rng=np.random.default_rng(seed * 1000 + r),
                    scaler=space.scaler,
                )
                if posterior == "laplace"
                else train_committee(
                    space.pool[rows], y[rows], k=5, seed=seed * 1000 + r, scaler=space.scaler
                )
            )
            committee = members.proba(space.pool)
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


def cached_eval_rows(space: HeadSpace, Xe: np.ndarray, backend: str) -> np.ndarray:
    """The eval rows in the head's space; for the graph head, kept in .work like the graph."""
    if space.graph is None:
        return Xe
    # v2: [power-normalised row, neighbours' mean] (session 7); the v1 file held a ½-mix
    path = WORK / f"graph_eval_v2_{len(space.pool)}x{Xe.shape[0]}_{backend}.npy"
    if not path.exists():
        np.save(path, space.graph_rows_for(Xe))
    return space.project(np.load(path))


def cached_graph(X: np.ndarray, backend: str) -> PoolGraph:
    """The pool's kNN graph, built once (minutes on a busy 2-core box) and kept in .work."""
    path = WORK / f"graph_{X.shape[0]}x{X.shape[1]}_{backend}.npz"
    scaler = fit_scaler(X)
    if path.exists():
        with np.load(path) as data:
            return PoolGraph(
                neighbors=data["neighbors"],
                weights=data["weights"],
                scaler=scaler,
                axes=data["axes"],
                points=data["points"],
                sigma=float(data["sigma"]),
                backend=backend,
                seconds=float(data["seconds"]),
            )
    graph = build_graph(X, scaler=scaler, backend=backend)
    np.savez(
        path,
        neighbors=graph.neighbors,
        weights=graph.weights,
        axes=graph.axes,
        points=graph.points,
        sigma=graph.sigma,
        seconds=graph.seconds,
    )
    return graph


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

    heads = result["heads"]
    fig, axes = plt.subplots(1, len(heads), figsize=(6 * len(heads), 5.5), squeeze=False)
    target = result["random_2000_accuracy"]
    for ax, kind in zip(axes[0], heads, strict=True):
        for key, curve in sorted(result["curves"].items()):
            name, head = key.split("/")
            if head != kind:
                continue
            style = {"color": "black", "linewidth": 2.5} if name == "random" else {"linewidth": 1.3}
            ax.plot(
                curve["labels"],
                curve["accuracy_mean"],
                marker="o",
                markersize=3,
                label=name,
                **style,
            )
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="random @2000")
        ax.set_xlim(0, 2100)
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy (mean of seeds)")
        ax.set_title(f"MNIST, MobileNetV2 @112px, {kind} head")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
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
    parser.add_argument("--random-to", type=int, default=2000, help="random's last label count")
    parser.add_argument("--strategies", default="", help="comma list (default: the whole zoo)")
    parser.add_argument("--heads", default="logistic,graph,selftrain")
    parser.add_argument(
        "--random-heads",
        default="",
        help="comma list: the heads random runs with (default: every head in --heads); "
        "'none' skips random (then give --random-2000-accuracy or --reuse)",
    )
    parser.add_argument(
        "--reuse",
        default="",
        help="comma list of earlier JSON outputs (same seeds, initial, batch): their curves join "
        "this result where this run does not make the same strategy/head (e.g. random to 2,000)",
    )
    parser.add_argument("--posterior", default="laplace", choices=("laplace", "bootstrap"))
    parser.add_argument("--graph-backend", default="exact", choices=("exact", "faiss", "usearch"))
    parser.add_argument(
        "--random-2000-accuracy",
        type=float,
        default=None,
        help="random's accuracy at 2,000 labels when random does not run that far",
    )
    parser.add_argument("--plot", default="", help="write the curves to this PNG")
    parser.add_argument(
        "--selftrain",
        default="",
        help="JSON: overrides of graph_selftrain's settings (semisup.SELFTRAIN), for screening",
    )
    parser.add_argument(
        "--components",
        type=int,
        default=GRAPH_SPACE_COMPONENTS,
        help="principal components the graph space keeps (0: every column, unprojected)",
    )
    args = parser.parse_args()

    if args.selftrain:
        overrides = json.loads(args.selftrain)
        SELFTRAIN["graph_selftrain"] = {**SELFTRAIN["graph_selftrain"], **overrides}
    pool, test = mnist_features()
    X, Xe = np.asarray(pool.X), np.asarray(test.X)
    names = [s for s in args.strategies.split(",") if s] or [s.name for s in strategies.available()]
    names = ["random", *[n for n in names if n != "random"]]
    heads = [h for h in args.heads.split(",") if h]
    spaces: dict[str, tuple[HeadSpace, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for kind in heads:
        started = time.perf_counter()
        graph = cached_graph(X, args.graph_backend) if kind in GRAPH_KINDS else None
        space = head_space(kind, X, graph=graph, components=args.components)
        spaces[kind] = (space, cached_eval_rows(space, Xe, args.graph_backend))
        seconds[f"space_{kind}"] = round(time.perf_counter() - started, 1)
        if graph is not None:
            seconds["graph_build_when_cached"] = round(graph.seconds, 1)
    random_rounds = max(args.rounds, (args.random_to - args.initial) // args.batch)
    curves: dict[str, Any] = {}
    random_heads = [h for h in args.random_heads.split(",") if h] or heads
    for name in names:
        for kind in heads:
            if name == "random" and kind not in random_heads:
                continue
            started = time.perf_counter()
            rounds = random_rounds if name == "random" and kind == "logistic" else args.rounds
            labels = [args.initial + r * args.batch for r in range(rounds + 1)]
            space, eval_rows = spaces[kind]
            per_seed = []
            for seed in range(args.seeds):
                initial = np.random.default_rng(seed).choice(len(X), args.initial, replace=False)
                per_seed.append(
                    run_curve(
                        name,
                        space,
                        X,
                        pool.y,
                        eval_rows,
                        test.y,
                        initial=initial,
                        rounds=rounds,
                        batch=args.batch,
                        seed=seed,
                        posterior=args.posterior,
                    )
                )
                print(f"{name}/{kind} seed {seed}: {per_seed[-1]}", file=sys.stderr, flush=True)
            acc = np.array(per_seed)
            key = f"{name}/{kind}"
            curves[key] = {
                "labels": labels,
                "accuracy_mean": [round(float(a), 4) for a in acc.mean(axis=0)],
                "accuracy_std": [round(float(a), 4) for a in acc.std(axis=0)],
                "accuracy_per_seed": [[round(float(a), 4) for a in row] for row in acc],
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(
                f"{key:28} final {acc.mean(axis=0)[-1]:.4f}  ({curves[key]['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    for path in [p for p in args.reuse.split(",") if p]:
        curves = {**_reused_curves(path, args), **curves}
    # random with the logistic head is the yardstick; a run without that head uses its first
    reference = curves.get("random/logistic") or curves.get(f"random/{heads[0]}")
    if reference is None and args.random_2000_accuracy is None:
        print("no random run: give --random-2000-accuracy or --reuse", file=sys.stderr)
        return 2
    if args.random_2000_accuracy is not None or reference is None:
        random_2000 = args.random_2000_accuracy
    else:
        labels = reference["labels"]
        at = labels.index(args.random_to) if args.random_to in labels else -1
        random_2000 = reference["accuracy_mean"][at]
    to_2000 = {
        key: labels_to_reach(c["labels"], c["accuracy_mean"], random_2000)
        for key, c in curves.items()
    }
    reached = {k: v for k, v in to_2000.items() if v is not None and not k.startswith("random/")}
    best = min(reached, key=lambda k: reached[k]) if reached else None
    random_final = reference["accuracy_mean"][args.rounds] if reference else None
    result = {
        "pool": len(X),
        "eval": len(Xe),
        "dim": int(X.shape[1]),
        "seeds": args.seeds,
        "rounds": args.rounds,
        "initial": args.initial,
        "batch": args.batch,
        "heads": heads,
        "posterior": args.posterior,
        "graph_backend": args.graph_backend,
        "selftrain": SELFTRAIN["graph_selftrain"],
        "graph_space_components": args.components,
        "random_2000_accuracy": random_2000,
        "labels_to_random_2000": to_2000,
        "best": {"run": best, "labels": reached.get(best) if best else None},
        "bald_vs_random": {
            kind: _per_round_gap(curves, f"bald/{kind}", f"random/{kind}", args.rounds)
            for kind in heads
            if f"bald/{kind}" in curves and f"random/{kind}" in curves
        },
        "random_final_accuracy": random_final,
        "labels_to_reach_random_final": {
            key: labels_to_reach(c["labels"], c["accuracy_mean"], random_final)
            for key, c in curves.items()
            if random_final is not None
        },
        "reused": [p for p in args.reuse.split(",") if p],
        "seconds": seconds,
        "curves": curves,
    }
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result, indent=2))
    return 0


def _reused_curves(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The curves of an earlier run of this script, when its setup matches this one's."""
    with open(path) as f:
        earlier = json.load(f)
    for field in ("seeds", "initial", "batch"):
        if earlier.get(field) != getattr(args, field):
            raise SystemExit(f"{path}: {field} {earlier.get(field)} != {getattr(args, field)}")
    return dict(earlier["curves"])


def _per_round_gap(curves: dict[str, Any], a: str, b: str, rounds: int) -> list[float]:
    """Accuracy points of run ``a`` minus run ``b`` after each round (same label counts)."""
    return [
        round(100 * (x - z), 2)
        for x, z in zip(
            curves[a]["accuracy_mean"][: rounds + 1],
            curves[b]["accuracy_mean"][: rounds + 1],
            strict=True,
        )
    ]


if __name__ == "__main__":
    raise SystemExit(main())
