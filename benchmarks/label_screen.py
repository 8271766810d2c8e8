"""Screen a head or strategy variant on MNIST to a few hundred labels (issue 18, session 9).

The same loop as ``label_efficiency.run_curve`` (``fit_head`` on the head's space, then
``strategies.run``), with hooks for the variants screened: other graph spaces (two
neighbourhood scales, SGC hops), an ensemble of heads, uncapped self-training, a prior
correction by EM (Saerens et al., Neural Computation 2002), a per-round cross-validated l2,
and a schedule of strategies (a cold-start strategy for the first rounds, DBAL after).
Accuracies and label counts only (run it niced); uses the cached faiss graph of
``label_efficiency.py --graph-backend faiss``.

    python benchmarks/label_screen.py '{"name": "st", "selftrain": [0.9, 0]}' 2 3 [OUT.jsonl]
    python benchmarks/label_screen.py '{"name": "w", "space": "graph_selftrain", \
        "st": {"weight": "balanced"}}' 2 4 [OUT.jsonl]

(session 10: ``"space": "graph_selftrain"`` runs the library's head, ``"st"`` overrides its
``semisup.SELFTRAIN`` settings.)

prints one JSON row (and appends it to OUT.jsonl when given).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from alcli import strategies
from alcli.learner import fit_head, fit_scaler, semisup
from alcli.learner.graph import _edge_weights, exact_knn
from alcli.learner.heads import train_head
from alcli.learner.semisup import HeadSpace, head_space, power_normalise
from label_efficiency import cached_eval_rows, cached_graph, labels_to_reach
from mnist_features import mnist_features

TARGET = 0.9355  # random / logistic at 2,000 labels, 5 seeds (session 9-10)
pool, test = mnist_features()
X, Xe = np.asarray(pool.X), np.asarray(test.X)
y, ye = np.asarray(pool.y), np.asarray(test.y)
graph = cached_graph(X, "faiss")


def graph_space() -> tuple[HeadSpace, np.ndarray]:
    space = head_space("graph", X, graph=graph)
    return space, cached_eval_rows(space, Xe, "faiss")


def eval_neighbours() -> tuple[np.ndarray, np.ndarray]:
    """The eval rows' neighbours in the pool and their edge weights (as ``smooth_new``)."""
    nb, sims = exact_knn(graph.project(Xe), graph.points, graph.k)
    return nb, _edge_weights(sims, graph.sigma)


def mean_over(rows_src: np.ndarray, nb: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    ww = w[:, :k] / w[:, :k].sum(axis=1, keepdims=True)
    out = np.empty((nb.shape[0], rows_src.shape[1]), dtype=np.float32)
    for s in range(0, nb.shape[0], 8192):
        out[s : s + 8192] = np.einsum(
            "nk,nkd->nd", ww[s : s + 8192], rows_src[nb[s : s + 8192, :k]]
        )
    return out


def make_space(kind: str) -> tuple[HeadSpace, np.ndarray]:
    if kind == "graph":
        return graph_space()
    if kind == "graph_selftrain":  # the library's head; its settings come from the variant's "st"
        space = head_space("graph_selftrain", X, graph=graph)
        return space, cached_eval_rows(space, Xe, "faiss")
    if kind == "logistic":
        return HeadSpace("logistic", X, fit_scaler(X), X), Xe
    if kind == "sqrt":
        S = power_normalise(X)
        return HeadSpace("logistic", S, fit_scaler(S), S), power_normalise(Xe)
    S, Se = power_normalise(X), power_normalise(Xe)
    enb, ew = eval_neighbours()
    if kind == "ms5_10":  # [sqrt x, mean of 5, mean of 10]
        parts = [
            S,
            mean_over(S, graph.neighbors, graph.weights, 5),
            mean_over(S, graph.neighbors, graph.weights, 10),
        ]
        eparts = [Se, mean_over(S, enb, ew, 5), mean_over(S, enb, ew, 10)]
    elif kind == "sgc2":  # [sqrt x, S x, S^2 x] with self loops, row-normalised (A+I)/2
        m1 = mean_over(S, graph.neighbors, graph.weights, 10)
        a1 = 0.5 * (S + m1)
        a2 = 0.5 * (a1 + mean_over(a1, graph.neighbors, graph.weights, 10))
        ea1 = 0.5 * (Se + mean_over(S, enb, ew, 10))
        ea2 = 0.5 * (ea1 + mean_over(a1, enb, ew, 10))
        parts, eparts = [S, a1, a2], [Se, ea1, ea2]
    elif kind == "mean2hop_sym":  # [sqrt x, mean, mean over the symmetrised graph's 2-hop]
        m1 = mean_over(S, graph.neighbors, graph.weights, 10)
        m2 = mean_over(m1, graph.neighbors, graph.weights, 10)
        parts = [S, m1, m2]
        em1 = mean_over(S, enb, ew, 10)
        eparts = [Se, em1, mean_over(m1, enb, ew, 10)]
    else:
        raise SystemExit(f"unknown space {kind}")
    P = np.hstack(parts).astype(np.float32)
    return HeadSpace("logistic", P, fit_scaler(P), P), np.hstack(eparts).astype(np.float32)


def selftrain(space, head, rows, labels, thr, cap, l2):
    probs = head.predict_proba(space.pool)
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    conf[rows] = -1
    extra = np.flatnonzero(conf >= thr)
    if cap and len(extra) > cap * len(rows):
        extra = extra[np.argsort(-conf[extra], kind="stable")[: cap * len(rows)]]
    extra = np.sort(extra)
    all_rows = np.concatenate([rows, extra])
    all_labels = np.concatenate([labels, head.classes[pred[extra]]])
    return train_head(space.pool[all_rows], all_labels, l2=l2, scaler=space.scaler, init=head), len(
        extra
    )


def cv_l2(space, rows, labels, grid, seed):
    """Pick l2 by 5-fold CV accuracy on the labeled rows (deterministic folds)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    folds = np.array_split(order, 5)
    scores = []
    for l2 in grid:
        correct = 0
        for f in folds:
            tr = np.setdiff1d(order, f)
            h = train_head(space.pool[rows[tr]], labels[tr], l2=l2, scaler=space.scaler)
            correct += int((h.predict(space.pool[rows[f]]) == labels[f]).sum())
        scores.append(correct)
    return grid[int(np.argmax(scores))]


def run(v: dict, seeds: int, rounds: int) -> dict:
    if "beta" in v:  # DBAL's prefilter: beta x budget lowest margins (Zhdanov uses 10)
        import alcli.strategies.hybrid as hybrid

        hybrid.DBAL_BETA = v["beta"]
    if "st" in v:  # session 10: graph_selftrain's settings (semisup.SELFTRAIN), e.g. weight
        semisup.SELFTRAIN["graph_selftrain"] = {**semisup.SELFTRAIN["graph_selftrain"], **v["st"]}
    spaces = {k: make_space(k) for k in {v.get("space", "graph"), *v.get("ens", [])}}
    main_space, main_eval = spaces[v.get("space", "graph")]
    per_seed, info_rows = [], []
    started = time.perf_counter()
    for seed in range(v.get("seed0", 0), v.get("seed0", 0) + seeds):
        initial = np.random.default_rng(seed).choice(len(X), 100, replace=False)
        labeled = np.zeros(len(X), dtype=bool)
        labeled[initial] = True
        curve, heads, extra = [], {}, []
        for r in range(rounds + 1):
            rows = np.flatnonzero(labeled)
            labels = y[rows]
            l2 = v.get("l2", 1.0)
            if v.get("cv_l2"):
                l2 = cv_l2(main_space, rows, labels, v["cv_l2"], seed * 1000 + r)
                extra.append(l2)
            heads[v.get("space", "graph")] = h = fit_head(
                main_space,
                rows,
                labels,
                l2=l2,
                init=heads.get(v.get("space", "graph")) if not v.get("cv_l2") else None,
            )
            pick_probs = h.predict_proba(main_space.pool)
            eval_probs = h.predict_proba(main_eval)
            if v.get("selftrain"):
                thr, cap = v["selftrain"]
                hs, n_extra = selftrain(main_space, h, rows, labels, thr, cap, l2)
                extra.append(n_extra)
                eval_probs = hs.predict_proba(main_eval)
                if v.get("st_picks"):
                    pick_probs = hs.predict_proba(main_space.pool)
            if v.get("prior_em"):
                lab_freq = np.array([(labels == c).mean() for c in h.classes])
                pi = lab_freq.copy()
                base = h.predict_proba(main_space.pool).astype(np.float64)
                for _ in range(v["prior_em"]):
                    w = base * (pi / lab_freq)
                    w /= w.sum(axis=1, keepdims=True)
                    pi = w.mean(axis=0)
                ratio = (pi / lab_freq).astype(np.float32)
                extra.append(round(float(np.abs(pi - lab_freq).sum()), 3))
                eval_probs = eval_probs * ratio
                if v.get("em_picks"):
                    pick_probs = pick_probs * ratio
            for k in v.get("ens", []):
                sp, se = spaces[k]
                hk = fit_head(sp, rows, labels, init=heads.get(k))
                heads[k] = hk
                eval_probs = eval_probs + hk.predict_proba(se)
                if v.get("ens_picks"):
                    pick_probs = pick_probs + hk.predict_proba(sp.pool)
            pick_probs = pick_probs / pick_probs.sum(axis=1, keepdims=True)
            acc = float((h.classes[eval_probs.argmax(axis=1)] == ye).mean())
            curve.append(acc)
            if r == rounds:
                break
            sched = v.get("schedule")  # e.g. [["typiclust", 1], ["dbal", 99]]
            name = v.get("s", "dbal")
            if sched:
                done = 0
                for nm, n in sched:
                    if r < done + n:
                        name = nm
                        break
                    done += n
            picks = strategies.run(
                name,
                budget=100,
                probs=pick_probs.astype(np.float32),
                embeddings=X,
                labeled=labeled,
                seed=seed * 1000 + r,
            )
            labeled[picks] = True
        per_seed.append([round(a, 4) for a in curve])
        info_rows.append(extra)
        print(seed, per_seed[-1], extra, file=sys.stderr, flush=True)
    acc = np.array(per_seed)
    mean = [round(float(a), 4) for a in acc.mean(axis=0)]
    labels_axis = [100 + 100 * r for r in range(rounds + 1)]
    return {
        **v,
        "seeds": seeds,
        "mean": mean,
        "per_seed": per_seed,
        "extra": info_rows,
        "to_target": labels_to_reach(labels_axis, mean, TARGET),
        "sec": round(time.perf_counter() - started),
    }


if __name__ == "__main__":
    variant = json.loads(sys.argv[1])
    row = run(variant, int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(row), flush=True)
    if len(sys.argv) > 4:
        with open(sys.argv[4], "a") as f:
            f.write(json.dumps(row) + "\n")
