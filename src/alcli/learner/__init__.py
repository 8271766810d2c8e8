"""Heads trained on cached embeddings: class probabilities, a bootstrap committee, evaluation.

The backbone is frozen, so a "model" is a multinomial logistic regression on the embeddings
(``heads``: why it is fast enough to retrain every round), a committee of such heads on
bootstrap resamples (``committee``) and their evaluation (``evaluation``). Import from here.
"""

from __future__ import annotations

from alcli.learner.committee import POSTERIORS, Committee, laplace_committee, train_committee
from alcli.learner.evaluation import ECE_BINS, Evaluation, evaluate, expected_calibration_error
from alcli.learner.graph import GRAPH_BACKENDS, PoolGraph, build_graph, check_backend
from alcli.learner.graph_cache import cached_graph
from alcli.learner.heads import (
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    PREDICT_CHUNK_ROWS,
    SERIAL_BELOW,
    Head,
    Scaler,
    fit_scaler,
    load_head,
    train_head,
)
from alcli.learner.semisup import (
    DEFAULT_HEAD,
    HEAD_KINDS,
    HeadSpace,
    check_head,
    fit_head,
    head_space,
)

__all__ = [
    "DEFAULT_HEAD",
    "DEFAULT_MAX_ITER",
    "DEFAULT_TOL",
    "ECE_BINS",
    "GRAPH_BACKENDS",
    "HEAD_KINDS",
    "POSTERIORS",
    "PREDICT_CHUNK_ROWS",
    "SERIAL_BELOW",
    "Committee",
    "Evaluation",
    "Head",
    "HeadSpace",
    "PoolGraph",
    "Scaler",
    "build_graph",
    "cached_graph",
    "check_backend",
    "check_head",
    "evaluate",
    "expected_calibration_error",
    "fit_head",
    "fit_scaler",
    "head_space",
    "laplace_committee",
    "load_head",
    "train_committee",
    "train_head",
]
