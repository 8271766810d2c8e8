"""Committees of heads: the disagreement that BALD and vote entropy read.

Two ways to get one (``POSTERIORS``):

``laplace`` (default)
    Samples from a Laplace approximation of the logistic head's posterior (MacKay, The
    Evidence Framework Applied to Classification Networks, Neural Computation 1992; the
    Kronecker-factored form of Ritter, Botev & Barber, ICLR 2018). The Hessian of the
    negative log posterior in the standardized space, Σ_i (diag p_i − p_i p_iᵀ) ⊗ x_i x_iᵀ +
    l2·I, is approximated by B̄ ⊗ XᵀX + l2·I with B̄ the mean of the per-row softmax
    Hessians; with XᵀX = U S Uᵀ and B̄ = Q Λ Qᵀ its eigenvalues are s_i·λ_j + l2, so a
    sample is W + U (E / sqrt(s λᵀ + l2)) Qᵀ with E standard normal [d, C], drawn from the
    Generator the caller passes. Members then disagree where the labels leave the weights
    free (directions of the embedding space no labeled row spans), which is what BALD's
    mutual information means (Housby et al. 2011): model uncertainty, not sampling noise.
``bootstrap``
    Each member is a head trained on a stratified bootstrap resample of the labeled rows.
    Measured on MNIST (issue 18): five such heads agree on only 65 % of the pool, and BALD
    on them is below random; kept for comparison.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from alcli.errors import UsageError
from alcli.learner.heads import (
    DEFAULT_MAX_ITER,
    PREDICT_CHUNK_ROWS,
    Head,
    Scaler,
    encode_labels,
    fit_scaler,
    train_head,
)

POSTERIORS = ("laplace", "bootstrap")


@dataclass(frozen=True, slots=True)
class Committee:
    """K heads trained on bootstrap resamples; the disagreement that BALD-like strategies use."""

    heads: list[Head]
    classes: NDArray[Any]

    def proba(self, X: ArrayLike) -> NDArray[np.float32]:
        """[K, n, C] probabilities, columns aligned to ``classes`` (the union of all heads').

        A head that never saw a class gives it probability 0.
        """
        from alcli.rows import PoolRows

        arr = X if isinstance(X, PoolRows) else np.asarray(X)
        n = arr.shape[0]
        out = np.zeros((len(self.heads), n, len(self.classes)), dtype=np.float32)
        # One pass over the pool for all K heads: a streamed pool is read once, not K times.
        step = arr.block_rows if isinstance(arr, PoolRows) else PREDICT_CHUNK_ROWS
        for start in range(0, n, step):
            block = arr[start : start + step]
            self.proba_into(block, out[:, start : start + len(block)])
        return out

    def weights(self) -> list[NDArray[np.float32]]:
        """Each head's weights [d, its classes]: ``PoolRows.project_blocks`` multiplies a
        block by all of them from one read and cast (``proba_from_logits`` finishes)."""
        return [head.weights for head in self.heads]

    def proba_from_logits(
        self, logits: Sequence[NDArray[np.float32]], out: NDArray[np.float32]
    ) -> None:
        """out[k] = head k's probabilities from its ``rows @ weights`` (``logits[k]``, changed
        in place): what ``proba_into`` gives on those rows."""
        for k, (head, probs) in enumerate(zip(self.heads, logits, strict=True)):
            if len(head.classes) == 1:
                probs.fill(1.0)
            else:
                head.proba_from_logits(probs)
            self._place(k, head, probs, out)

    def proba_into(self, block: NDArray[np.float32], out: NDArray[np.float32]) -> None:
        """out[k] = head k's probabilities on ``block``, columns aligned to ``classes``."""
        for k, head in enumerate(self.heads):
            self._place(k, head, head.predict_proba(block), out)

    def _place(
        self, k: int, head: Head, probs: NDArray[np.float32], out: NDArray[np.float32]
    ) -> None:
        """out[k] = ``probs`` in the committee's columns (a head may lack some classes)."""
        if len(head.classes) == len(self.classes):
            out[k] = probs
        else:
            out[k][:, np.searchsorted(self.classes, head.classes)] = probs


def _stratified_bootstrap(codes: NDArray[np.intp], rng: np.random.Generator) -> NDArray[np.intp]:
    """Resample each class's rows with replacement to its own count: every class stays in."""
    parts = []
    for c in np.unique(codes):
        members = np.flatnonzero(codes == c)
        parts.append(rng.choice(members, size=len(members), replace=True))
    return np.sort(np.concatenate(parts))


def train_committee(
    X: ArrayLike,
    y: Sequence[Hashable] | ArrayLike,
    *,
    k: int = 5,
    seed: int = 0,
    l2: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
    scaler: Scaler | None = None,
    init: Head | None = None,
) -> Committee:
    """``k`` heads, each on a stratified bootstrap resample drawn from a ``seed``-ed generator.

    Stratified (each class resampled within itself) so every resample contains every class:
    a member that never saw a class would disagree for a meaningless reason. ``init`` (the
    head on all the rows) is every member's starting point: a resample's optimum is near it.
    """
    if k < 1:
        raise UsageError(f"a committee needs k >= 1 heads, got {k}")
    arr = np.asarray(X)
    classes, codes = encode_labels(y)
    if len(codes) != arr.shape[0]:
        raise UsageError(f"{arr.shape[0]} embeddings but {len(codes)} labels; they must match")
    scaler = scaler if scaler is not None else fit_scaler(arr)
    rngs = np.random.default_rng(seed).spawn(k)
    heads = []
    for rng in rngs:
        rows = _stratified_bootstrap(codes, rng)
        heads.append(
            train_head(
                arr[rows],
                classes[codes[rows]],
                l2=l2,
                max_iter=max_iter,
                scaler=scaler,
                init=init,
            )
        )
    return Committee(heads=heads, classes=classes)


def laplace_committee(
    head: Head,
    X: ArrayLike,
    *,
    k: int = 5,
    rng: np.random.Generator,
    l2: float = 1.0,
    scaler: Scaler | None = None,
    temperature: float = 1.0,
) -> Committee:
    """``k`` heads sampled from the Kronecker-factored Laplace posterior of ``head``
    (``temperature`` scales the samples' spread: 1 is the posterior itself; below 1 a
    tempered one, as ``benchmarks/bald_diagnosis.py`` measures).

    ``X``: the labeled rows ``head`` was trained on (raw embeddings); ``scaler``: the one it
    was trained with (the head folds it in; it is unfolded here). The bias keeps its MAP value.
    """
    if k < 1:
        raise UsageError(f"a committee needs k >= 1 heads, got {k}")
    arr = np.asarray(X)
    if len(head.classes) < 2:
        return Committee(heads=[head] * k, classes=head.classes)
    scaler = scaler if scaler is not None else fit_scaler(arr)
    Xs = scaler.transform(arr).astype(np.float64)
    probs = head.predict_proba(arr).astype(np.float64)
    s, U = np.linalg.eigh(Xs.T @ Xs)
    B = (np.diag(probs.sum(axis=0)) - probs.T @ probs) / len(probs)
    lam, Q = np.linalg.eigh(B)
    std = temperature / np.sqrt(np.maximum(s, 0.0)[:, None] * np.maximum(lam, 0.0)[None, :] + l2)
    scale = scaler.scale.astype(np.float64)[:, None]
    mean = scaler.mean.astype(np.float64)
    heads = []
    for _ in range(k):
        E = rng.standard_normal(std.shape)
        delta = U @ (E * std) @ Q.T / scale  # back in raw space
        heads.append(
            Head(
                classes=head.classes,
                weights=(head.weights + delta).astype(np.float32),
                bias=(head.bias - mean @ delta).astype(np.float32),
            )
        )
    return Committee(heads=heads, classes=head.classes)
