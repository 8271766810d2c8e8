"""Why BALD (Laplace posterior, logistic head) loses to random early (issue 18, session 9).

    python benchmarks/bald_diagnosis.py TAU SEEDS ROUNDS [MEMBERS [EPIG_TARGETS]]

Runs BALD on the MNIST benchmark's setup with a Laplace committee of MEMBERS (5) samples whose
standard deviation is scaled by TAU (1 = ``laplace_committee`` as shipped), and at every round
measures the 100 rows BALD, random and margin (and EPIG over EPIG_TARGETS random unlabeled
rows, when given) would pick from the *same* labeled set: the accuracy one round later, the
head's error on them, their energy outside the labeled rows' span, local density, class
concentration; over the pool, Spearman's rho of MI with that energy and with -margin, MI's
saturation, and how often a posterior sample agrees with the MAP head. One JSON row a round.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from scipy.stats import spearmanr

from alcli import strategies
from alcli.learner import evaluate, fit_head, fit_scaler
from alcli.learner.committee import laplace_committee
from alcli.learner.heads import Head
from alcli.learner.semisup import HeadSpace
from alcli.strategies.disagreement import mutual_information
from label_efficiency import cached_graph
from mnist_features import mnist_features

pool, test = mnist_features()
X, Xe = np.asarray(pool.X), np.asarray(test.X)
y, ye = np.asarray(pool.y), np.asarray(test.y)
graph = cached_graph(X, "faiss")
space = HeadSpace("logistic", X, fit_scaler(X), X)
Xs_pool = space.scaler.transform(X).astype(np.float32)
sq_norm = (Xs_pool.astype(np.float64) ** 2).sum(axis=1)
# local density: mean cosine similarity to the 10 graph neighbours (search space)
density = np.einsum("nd,nkd->nk", graph.points, graph.points[graph.neighbors]).mean(axis=1)


def laplace(head: Head, rows: np.ndarray, tau: float, rng: np.random.Generator, k: int = 5):
    """alcli.learner.committee.laplace_committee with the sample std scaled by tau."""
    return laplace_committee(head, X[rows], k=k, rng=rng, scaler=space.scaler, temperature=tau)


def out_of_span(rows: np.ndarray) -> np.ndarray:
    """Fraction of each pool row's standardized energy outside the labeled rows' span."""
    L = Xs_pool[rows].astype(np.float64)
    Qm, _ = np.linalg.qr(L.T)  # d x n orthonormal basis of the span
    inside = ((Xs_pool @ Qm.astype(np.float32)).astype(np.float64) ** 2).sum(axis=1)
    return 1.0 - inside / sq_norm


def pick_stats(picks, head, rows, labeled, resid, margin, mi):
    pr = np.argsort(np.argsort(resid)) / len(resid)
    dr = np.argsort(np.argsort(density)) / len(density)
    new = labeled.copy()
    new[picks] = True
    nrows = np.flatnonzero(new)
    h2 = fit_head(space, nrows, y[nrows], init=head)
    cls = np.bincount(y[picks].astype(int), minlength=10)
    return {
        "acc_after": round(evaluate(h2, Xe, ye).accuracy, 4),
        "head_error_on_picks": round(float((head.predict(X[picks]) != y[picks]).mean()), 3),
        "out_of_span_pct": round(float(pr[picks].mean()), 3),
        "density_pct": round(float(dr[picks].mean()), 3),
        "largest_class_share": round(float(cls.max() / len(picks)), 2),
        "classes_missing": int((cls == 0).sum()),
        "margin_mean": round(float(margin[picks].mean()), 3),
        "mi_mean": round(float(mi[picks].mean()), 3),
    }


def epig(committee: np.ndarray, targets: np.ndarray, block: int = 512) -> np.ndarray:
    """Expected predictive information gain (Bickford Smith, Kirsch, Farquhar, Gal & Foster,
    Prediction-oriented Bayesian active learning, AISTATS 2023): the mutual information between
    a candidate's label and the label of a target row x* drawn from the pool, averaged over
    ``targets``; from the K posterior samples in ``committee`` [K, n, C]."""
    k, n, c = committee.shape
    pt = committee[:, targets, :].astype(np.float64)  # K, m, C
    m = pt.shape[1]
    pt_mean = pt.mean(axis=0)  # m, C
    right = pt.reshape(k, m * c)
    out = np.empty(n)
    for start in range(0, n, block):
        px = committee[:, start : start + block, :].astype(np.float64)  # K, B, C
        b = px.shape[1]
        joint = (px.reshape(k, b * c).T @ right / k).reshape(b, c, m, c)
        indep = px.mean(axis=0)[:, :, None, None] * pt_mean[None, None, :, :]
        ratio = np.log(np.maximum(joint, 1e-300)) - np.log(np.maximum(indep, 1e-300))
        out[start : start + b] = (joint * ratio).sum(axis=(1, 3)).mean(axis=1)
    return out


def main() -> None:
    tau, seeds, rounds = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    members = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    with_epig = len(sys.argv) > 5
    out = []
    for seed in range(seeds):
        initial = np.random.default_rng(seed).choice(len(X), 100, replace=False)
        labeled = np.zeros(len(X), dtype=bool)
        labeled[initial] = True
        head = None
        curve = []
        for r in range(rounds + 1):
            t0 = time.perf_counter()
            rows = np.flatnonzero(labeled)
            head = fit_head(space, rows, y[rows], init=head)
            curve.append(round(evaluate(head, Xe, ye).accuracy, 4))
            if r == rounds:
                break
            rng = np.random.default_rng(seed * 1000 + r)
            com = laplace(head, rows, tau, rng, k=members)
            cp = com.proba(X)
            mi = mutual_information(cp)
            p = head.predict_proba(X)
            top2 = np.sort(p, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            resid = out_of_span(rows)
            agree = float(np.mean([(c.argmax(axis=1) == p.argmax(axis=1)).mean() for c in cp]))
            un = ~labeled
            sub = np.flatnonzero(un)[::5]
            row = {
                "tau": tau,
                "seed": seed,
                "round": r,
                "labels": int(labeled.sum()),
                "acc": curve[-1],
                "spearman_mi_outofspan": round(float(spearmanr(mi[sub], resid[sub])[0]), 3),
                "spearman_mi_negmargin": round(float(spearmanr(mi[sub], -margin[sub])[0]), 3),
                "mi_median_over_log10": round(float(np.median(mi[un]) / np.log(10)), 3),
                "member_agrees_with_map": round(agree, 3),
                "outofspan_mean": round(float(resid[un].mean()), 3),
            }
            picks = {
                "bald": strategies.run(
                    "bald", budget=100, committee=cp, labeled=labeled, seed=seed * 1000 + r
                ),
                "random": strategies.run(
                    "random", budget=100, labeled=labeled, seed=seed * 1000 + r
                ),
                "margin": strategies.run(
                    "margin", budget=100, probs=p, labeled=labeled, seed=seed * 1000 + r
                ),
            }
            if with_epig:
                targets = rng.choice(np.flatnonzero(un), int(sys.argv[5]), replace=False)
                scores = epig(cp, np.sort(targets))
                scores[labeled] = -np.inf
                picks["epig"] = np.argsort(-scores, kind="stable")[:100]
            for name, pk in picks.items():
                row[name] = pick_stats(pk, head, rows, labeled, resid, margin, mi)
            row["sec"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
            out.append(row)
            labeled[picks["bald"]] = True
        print(json.dumps({"tau": tau, "seed": seed, "bald_curve": curve}), flush=True)


if __name__ == "__main__":
    main()
