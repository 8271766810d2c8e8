"""How good a head is on a labeled set: accuracy, per-class accuracy, calibration (ECE)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alcli.errors import UsageError
from alcli.learner.heads import Head, encode_labels

#: Bins of the expected calibration error (Guo et al., 2017 use 15).
ECE_BINS = 15


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How good a head is on a labeled set."""

    accuracy: float
    per_class: dict[Any, float]
    ece: float
    n: int
    support: dict[Any, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: labels become strings, floats stay floats."""
        return {
            "accuracy": self.accuracy,
            "ece": self.ece,
            "n": self.n,
            "per_class": {str(k): v for k, v in self.per_class.items()},
            "support": {str(k): v for k, v in self.support.items()},
        }


def expected_calibration_error(
    confidence: NDArray[np.floating[Any]], correct: NDArray[np.bool_], *, bins: int = ECE_BINS
) -> float:
    """Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)| over equal-width bins (lo, hi]."""
    conf = np.asarray(confidence, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    which = np.clip(np.ceil(conf * bins).astype(np.intp) - 1, 0, bins - 1)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    hit_sum = np.bincount(which, weights=hits, minlength=bins)
    return float(np.abs(hit_sum - conf_sum).sum() / conf.size)


def evaluate(head: Head, X: ArrayLike, y: Sequence[Hashable] | ArrayLike) -> Evaluation:
    """Accuracy, per-class accuracy (recall of each true class) and 15-bin ECE of ``head``.

    A true label the head never saw counts as a miss for that class.
    """
    truth = np.asarray(y)
    if truth.shape[0] == 0:
        raise UsageError("the evaluation set is empty", hint="give an eval set with labels")
    probs = head.predict_proba(X)
    if probs.shape[0] != truth.shape[0]:
        raise UsageError(f"{probs.shape[0]} embeddings but {truth.shape[0]} labels to evaluate")
    best = np.argmax(probs, axis=1)
    predicted = head.classes[best]
    correct = np.asarray(predicted == truth, dtype=bool)
    confidence = probs[np.arange(len(best)), best]
    per_class: dict[Any, float] = {}
    support: dict[Any, int] = {}
    labels, codes = encode_labels(truth)
    for j, label in enumerate(labels.tolist()):
        members = codes == j
        support[label] = int(members.sum())
        per_class[label] = float(correct[members].mean())
    return Evaluation(
        accuracy=float(correct.mean()),
        per_class=per_class,
        ece=expected_calibration_error(confidence, correct),
        n=int(truth.shape[0]),
        support=support,
    )
