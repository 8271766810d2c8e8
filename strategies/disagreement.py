"""Disagreement (query-by-committee) sampling over K x n x C committee probabilities.

Both strategies work on row blocks so memory stays O(K·block·C) however large the pool.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._distances import FloatArray
from ._select import Picks, SelectionContext, rank_unlabeled
from .registry import register
from .uncertainty import entropy

_BLOCK_ROWS = 16_384


def mutual_information(committee: FloatArray) -> npt.NDArray[np.float64]:
    """BALD's score: H(mean_k p_k) - mean_k H(p_k), in nats, clipped at 0 against rounding."""
    k, n, c = committee.shape
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        block = committee[:, start : start + _BLOCK_ROWS, :]
        rows = block.shape[1]
        mean = block.mean(axis=0, dtype=np.float64)
        member_entropy = entropy(block.reshape(k * rows, c)).reshape(k, rows).mean(axis=0)
        out[start : start + rows] = entropy(mean) - member_entropy
    np.maximum(out, 0.0, out=out)
    return out


def vote_entropy_scores(committee: FloatArray) -> npt.NDArray[np.float64]:
    """Entropy (nats) of the committee's hard votes; argmax ties go to the lower class."""
    k, n, c = committee.shape
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        votes = np.argmax(committee[:, start : start + _BLOCK_ROWS, :], axis=2)
        rows = votes.shape[1]
        counts = np.zeros((rows, c), dtype=np.float64)
        for member in votes:
            counts[np.arange(rows), member] += 1.0
        out[start : start + rows] = entropy(counts / k)
    return out


@register(
    "bald",
    family="disagreement",
    needs={"committee", "labeled"},
    cost="O(K·n·C + n log b)",
    reference="Houlsby, Huszár, Ghahramani & Lengyel, Bayesian Active Learning for "
    "Classification and Preference Learning, arXiv:1112.5745, 2011; Gal, Islam & "
    "Ghahramani, Deep Bayesian Active Learning with Image Data, ICML 2017",
    aliases=("mutual_information",),
)
def bald(ctx: SelectionContext) -> Picks:
    """Items the committee disagrees on most; score = mutual information, largest first."""
    return rank_unlabeled(ctx, mutual_information(ctx.require_committee()), largest=True)


@register(
    "vote_entropy",
    family="disagreement",
    needs={"committee", "labeled"},
    cost="O(K·n·C + n log b)",
    reference="Dagan & Engelson, Committee-Based Sampling for Training Probabilistic "
    "Classifiers, ICML 1995",
    aliases=("qbc",),
)
def vote_entropy(ctx: SelectionContext) -> Picks:
    """Items whose committee votes are most split; score = vote entropy, largest first."""
    return rank_unlabeled(ctx, vote_entropy_scores(ctx.require_committee()), largest=True)
