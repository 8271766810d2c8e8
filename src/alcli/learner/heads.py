"""Heads trained on cached embeddings: a scaler, a logistic-regression head, its training.

The backbone is frozen (DESIGN.md, decision 1), so a "model" here is a multinomial logistic
regression on the embeddings. It is retrained every round (from the previous round's head,
last point below), which is only affordable because it is small and fast:

* The loss and gradient are plain numpy in float32 (OpenBLAS beats torch's CPU path 2-4x on
  this machine) and scipy's L-BFGS-B drives them in float64.
* Features are standardized (``Scaler``) so one ``l2`` and one tolerance suit every backbone.
  The scaler is folded into the head's weights after training, so predicting on a million raw
  rows needs no standardized copy of the pool.
* L-BFGS-B's own vector updates run on scipy's bundled OpenBLAS, which by default splits
  12k-element dot products over every core; on a busy 2-core machine that thread handoff made
  the optimizer's bookkeeping 10-20x slower than the loss itself. It runs single-threaded
  (thread-locally, ``alcli._threads.serial_blas``), and so do numpy's products for small heads
  (``SERIAL_BELOW``); big heads keep numpy's threads.
* Training starts from zeros unless ``init`` names a head to start from (the previous
  round's). The L2-regularised problem is strictly convex, so the optimum does not depend on
  the start; only the point where L-BFGS stops within its tolerance does (warm- and
  cold-started heads' predictions agreed on 99.88-99.96 % of 10,000 held-out rows of the MNIST
  training pool). A round adds a few hundred rows to thousands, so the last head is already
  close: measured on MNIST features, 5,120 rows train in 0.57 s / 30 iterations warm against
  2.05 s / 112 cold. A warm head is a pure function of (rows, labels, l2, init), which is why
  the agent saves every head it starts from (see alcli.agent.heads).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from alcli._threads import serial_blas
from alcli.errors import UsageError

#: Rows per block when predicting; 64k x 1280 float32 is 320 MiB of input touched per block and
#: the logits stay in L2/L3-friendly pieces.
PREDICT_CHUNK_ROWS = 65_536
#: Rows summed at a time when fitting a scaler (see ``fit_scaler``); ``alcli.rows`` reads
#: blocks of a multiple of it.
SCALER_SUM_ROWS = 1024
#: Default L-BFGS iteration cap. A standardized 10k x 1280, 10-class problem reaches the
#: tolerance below in well under this; the cap bounds a round's cost on hard, near-separable
#: data where the last iterations only polish weights that no longer change a prediction.
DEFAULT_MAX_ITER = 300
#: Relative decrease of the objective (scipy's ``ftol``) at which L-BFGS stops. The gradient is
#: computed in float32, so asking for much less than 1e-7 only spends line searches on noise.
DEFAULT_TOL = 1e-7


#: Below this many elements in the training matrix (rows x dim), numpy's matrix products also
#: run on one thread. Measured on this 2-core machine while others were using it: 1,000 x 1280
#: trains in 0.25 s on one thread against 0.8-1.2 s on two; 10,000 x 1280 in 2.8-3.1 s against
#: 4.0-4.6 s (on an idle machine two threads win, 1.4 s against 1.9 s). Small heads stay on one
#: thread, the choice that degrades least. From 8M (session 12; it was 16M) two: a
#: ``graph_selftrain`` refit is 10,000 rows x 1,024 components (10.2M), one objective call
#: 14 ms on one thread against 9 ms on two, idle (a scratch timing), and the agent's overhead
#: run (nine such fits and more) took 57.9 / 58.1 s against 68.8 / 71.1 s at 16M, side by side
#: (RESULTS.md, issue 18, session 12). Two threads also change the float sums, so the
#: threshold is fixed, never chosen by the machine's load: a head stays a function of its
#: inputs.
SERIAL_BELOW = 8_000_000


@dataclass(frozen=True, slots=True)
class Scaler:
    """Per-feature standardization ``(x - mean) / scale``.

    Fit it once on the whole pool's embeddings, not on the labeled rows: it is unsupervised,
    so using every row is legitimate, and it then stays the same from round to round, which
    keeps heads (and their regularisation) comparable across rounds and strategies.
    """

    mean: NDArray[np.float32]
    scale: NDArray[np.float32]

    def transform(
        self, X: ArrayLike, block: int = 8192, *, rows: ArrayLike | None = None
    ) -> NDArray[np.float32]:
        """Standardized float32 copy of ``X`` (of ``X[rows]`` when given), written block by
        block into one new array.

        ``(x - mean) / scale`` in place on each block, the same float32 operations as the
        plain expression, so the same bits, without its two whole-size temporaries (nor a
        third for gathering ``rows``): fresh pool-sized arrays cost their page faults. 42,000
        rows x 2,560 (410 MiB): 1.53 s gathered then standardized, 0.28 s here; 15,700 rows:
        0.13 s and 0.11 s (``benchmarks/refit_profile.py``)."""
        index = None if rows is None else np.asarray(rows, dtype=np.int64)
        arr = _rows_source(X, index)
        if arr.ndim != 2:
            picked = arr if index is None else arr[index]
            return (picked.astype(np.float32) - self.mean) / self.scale
        n = arr.shape[0] if index is None else len(index)
        out = np.empty((n, arr.shape[1]), dtype=np.float32)
        for start in range(0, n, block):
            part = out[start : start + block]
            stop = start + len(part)
            part[...] = arr[start:stop] if index is None else arr[index[start:stop]]
            np.subtract(part, self.mean, out=part)
            np.divide(part, self.scale, out=part)
        return out


def fit_scaler(X: ArrayLike, *, chunk_rows: int | None = None) -> Scaler:
    """Mean and standard deviation of every column, in float64, one block of rows at a time.

    Blockwise (32 MiB of float64 per block by default) so a float16 memmap of a million rows
    is never materialised at once. Constant columns get scale 1 (they carry no information;
    dividing by 0 would make NaNs).
    """
    arr = _rows_or_array(X)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UsageError(f"cannot fit a scaler on an array of shape {arr.shape}; need [n>0, d]")
    n, d = arr.shape
    chunk_rows = arr.block_rows if hasattr(arr, "block_rows") else chunk_rows
    chunk_rows = chunk_rows or max(1, (4 << 20) // max(d, 1))
    # Sums go SCALER_SUM_ROWS rows at a time, whatever the read size: a pool streamed in blocks
    # of any multiple of it gets the same scaler, bit for bit, as the array in memory.
    chunk_rows = max(SCALER_SUM_ROWS, chunk_rows - chunk_rows % SCALER_SUM_ROWS)
    total = np.zeros(d, dtype=np.float64)
    total_sq = np.zeros(d, dtype=np.float64)
    for start in range(0, n, chunk_rows):
        block = arr[start : start + chunk_rows]
        for first in range(0, len(block), SCALER_SUM_ROWS):
            part = block[first : first + SCALER_SUM_ROWS]
            # Accumulate in float64 without a float64 copy of the block (half the traffic).
            total += part.sum(axis=0, dtype=np.float64)
            total_sq += np.einsum("ij,ij->j", part, part, dtype=np.float64)
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)
    scale = np.sqrt(var)
    scale[scale < 1e-12] = 1.0
    return Scaler(mean=mean.astype(np.float32), scale=scale.astype(np.float32))


@dataclass(frozen=True, slots=True)
class Head:
    """A multinomial logistic regression in the raw embedding space.

    ``weights`` [d, C] and ``bias`` [C] already include the standardization the head was
    trained with, so ``predict_proba`` takes raw embeddings. ``classes`` are the sorted unique
    training labels; column j of the probabilities is ``classes[j]``.
    """

    classes: NDArray[Any]
    weights: NDArray[np.float32]
    bias: NDArray[np.float32]
    n_iter: int = 0
    converged: bool = True
    train_seconds: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def predict_proba(
        self, X: ArrayLike, *, chunk_rows: int = PREDICT_CHUNK_ROWS
    ) -> NDArray[np.float32]:
        """Class probabilities [n, C] float32, computed block by block (bounded memory;
        ``X`` may be an ``alcli.rows.PoolRows``, read a block at a time)."""
        arr = _rows_or_array(X)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise UsageError(
                f"embeddings have shape {arr.shape}; this head expects [n, {self.dim}]"
            )
        n = arr.shape[0]
        if hasattr(arr, "block_rows"):  # a streamed pool: its own block size, its buffer reused
            chunk_rows = arr.block_rows
        n_classes = len(self.classes)
        out = np.empty((n, n_classes), dtype=np.float32)
        if n_classes == 1:
            out.fill(1.0)
            return out
        if hasattr(arr, "project"):  # a streamed pool: cast and multiplied in cached pieces
            arr.project(self.weights, out=out)
            for start in range(0, n, chunk_rows):
                self.proba_from_logits(out[start : start + chunk_rows])
            return out
        for start in range(0, n, chunk_rows):
            block = arr[start : start + chunk_rows]
            if block.dtype != np.float32:
                block = block.astype(np.float32)
            logits = out[start : start + len(block)]
            np.matmul(block, self.weights, out=logits)
            self.proba_from_logits(logits)
        return out

    def proba_from_logits(self, logits: NDArray[np.float32]) -> None:
        """``rows @ weights`` -> the rows' probabilities, in place (the bias, a softmax)."""
        logits += self.bias
        _softmax_inplace(logits)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The most probable label of every row (ties: the class that sorts first)."""
        return self.classes[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path: str) -> None:
        """Write the head as an ``.npz`` (classes, weights, bias)."""
        np.savez(path, classes=self.classes, weights=self.weights, bias=self.bias)


def load_head(path: str) -> Head:
    """Read a head written by ``Head.save``."""
    with np.load(path, allow_pickle=False) as data:
        return Head(classes=data["classes"], weights=data["weights"], bias=data["bias"])


def _rows_or_array(X: Any) -> Any:
    """``X`` as it is when it is a ``PoolRows`` (sliced block by block, never gathered),
    else as an array."""
    from alcli.rows import PoolRows

    return X if isinstance(X, PoolRows) else np.asarray(X)


def _rows_source(X: Any, index: NDArray[np.int64] | None) -> Any:
    """What ``index`` (or all of ``X``) is read from: an array, or with ``index`` a ``PoolRows``
    as it is, so a pool too big to gather gives up those rows alone, a block at a time."""
    return np.asarray(X) if index is None else _rows_or_array(X)


def _softmax_inplace(logits: NDArray[np.float32]) -> None:
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)


def encode_labels(y: Sequence[Hashable] | ArrayLike) -> tuple[NDArray[Any], NDArray[np.intp]]:
    """Sorted unique labels and each row's index into them."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise UsageError(f"labels must be one-dimensional, got shape {arr.shape}")
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:  # e.g. a mix of str and int
        raise UsageError(
            "labels must be all strings or all numbers", hint="write every label as text"
        ) from exc
    return classes, codes.astype(np.intp)


class _Objective:
    """Mean cross-entropy + (l2 / 2n)·‖W‖² and its gradient; float32 maths, float64 interface.

    Dividing the sklearn-style ``sum(CE) + l2/2·‖W‖²`` by n keeps the objective O(1), so one
    tolerance works for 50 labels and for 50,000. The bias is not penalised. With row
    weights the sums are weighted and n is the weights' sum (all ones: the plain objective).
    """

    def __init__(
        self,
        Xs: NDArray[np.float32],
        codes: NDArray[np.intp],
        n_classes: int,
        l2: float,
        weight: NDArray[np.float32] | None = None,
    ):
        self.X = Xs
        self.codes = codes
        self.rows = np.arange(len(codes))
        self.d = Xs.shape[1]
        self.C = n_classes
        self.l2 = l2
        # with row weights, n is their sum: the weighted mean takes the place of the mean
        self.weight = weight
        self.n = Xs.shape[0] if weight is None else float(weight.sum(dtype=np.float64))

    def __call__(self, w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        d, C, n = self.d, self.C, self.n
        W = w[: d * C].reshape(d, C).astype(np.float32)
        b = w[d * C :].astype(np.float32)
        Z = self.X @ W
        Z += b
        Z -= Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        S = E.sum(axis=1, dtype=np.float64)
        if self.weight is None:
            nll = float(np.log(S).sum() - Z[self.rows, self.codes].sum(dtype=np.float64))
        else:
            row_nll = np.log(S) - Z[self.rows, self.codes]
            nll = float(np.dot(row_nll, self.weight.astype(np.float64)))
        P = E
        P /= S.astype(np.float32)[:, None]
        P[self.rows, self.codes] -= 1.0
        if self.weight is not None:
            P *= self.weight[:, None]
        grad_W = self.X.T @ P
        grad_W += self.l2 * W
        grad = np.empty(d * C + C, dtype=np.float64)
        grad[: d * C] = grad_W.ravel()
        grad[d * C :] = P.sum(axis=0, dtype=np.float64)
        grad /= n
        reg = 0.5 * self.l2 * float(np.dot(w[: d * C], w[: d * C]))
        return (nll + reg) / n, grad


def _checked_training_set(
    X: ArrayLike,
    y: Sequence[Hashable] | ArrayLike,
    l2: float,
    index: NDArray[np.int64] | None = None,
) -> tuple[Any, NDArray[Any], NDArray[np.intp]]:
    """``train_head``'s inputs as [n, d] rows (see ``_rows_source``), sorted classes and each
    training row's class code."""
    arr = _rows_source(X, index)
    if arr.ndim != 2:
        raise UsageError(f"embeddings must be [n, d], got shape {arr.shape}")
    classes, codes = encode_labels(y)
    n = arr.shape[0] if index is None else len(index)
    if len(codes) != n:
        raise UsageError(f"{n} embeddings but {len(codes)} labels; they must match")
    if len(codes) == 0:
        raise UsageError("cannot train a head on zero labeled items", hint="label some items")
    if l2 <= 0:
        raise UsageError(f"l2 must be > 0, got {l2}")
    return arr, classes, codes


def train_head(
    X: ArrayLike,
    y: Sequence[Hashable] | ArrayLike,
    *,
    l2: float = 1.0,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    scaler: Scaler | None = None,
    init: Head | None = None,
    sample_weight: ArrayLike | None = None,
    rows: ArrayLike | None = None,
) -> Head:
    """Fit a multinomial logistic regression with L2 penalty ``l2`` on (standardized) ``X``.

    ``y`` may hold strings or numbers. ``scaler`` should be the pool's (see ``Scaler``); when it
    is None one is fitted on ``X``. A single class in ``y`` gives a head that predicts that
    class with probability 1: there is nothing to discriminate, and a cold-start round with one
    class seen must not crash the run. The fit starts from zeros, or from ``init`` (a head of
    the same dimension, trained with the same scaler; classes it lacks start at zero, classes
    ``y`` lacks are dropped), and draws no random numbers, so it is deterministic; ``seed`` is
    accepted for symmetry with ``train_committee``. ``sample_weight`` (one positive number a
    row) weighs each row's loss, e.g. a bought label above a pseudo-label (``semisup``).
    ``rows``: train on ``X[rows]``, gathered as they are standardized (one copy of the
    training rows, not two: a self-training refit's are hundreds of MB).
    """
    del seed  # deterministic: L-BFGS from a fixed start on a strictly convex objective
    started = time.perf_counter()
    index = None if rows is None else np.asarray(rows, dtype=np.int64)
    arr, classes, codes = _checked_training_set(X, y, l2, index)
    d = arr.shape[1]
    n_classes = len(classes)
    if n_classes == 1:
        return Head(
            classes=classes,
            weights=np.zeros((d, 1), dtype=np.float32),
            bias=np.zeros(1, dtype=np.float32),
            train_seconds=time.perf_counter() - started,
        )
    if scaler is None:
        scaler = fit_scaler(arr if index is None else arr[index])
    Xs = scaler.transform(arr, rows=index)
    weight = None
    if sample_weight is not None:
        weight = np.asarray(sample_weight, dtype=np.float32).ravel()
        if len(weight) != len(codes) or not np.all(weight > 0):
            raise UsageError(f"sample_weight needs {len(codes)} positive numbers, one a row")
    objective = _Objective(Xs, codes, n_classes, l2, weight)
    serial = ("scipy", "numpy") if Xs.size < SERIAL_BELOW else ("scipy",)
    with serial_blas(serial):
        result = minimize(
            objective,
            _start_point(init, classes, scaler, d),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "ftol": tol, "gtol": 1e-6, "maxcor": 20},
        )
    W = result.x[: d * n_classes].reshape(d, n_classes)
    b = result.x[d * n_classes :]
    # Fold the standardization in: ((x - m) / s) @ W + b == x @ (W / s) + (b - (m / s) @ W).
    W_raw = W / scaler.scale.astype(np.float64)[:, None]
    b_raw = b - scaler.mean.astype(np.float64) @ W_raw
    return Head(
        classes=classes,
        weights=np.ascontiguousarray(W_raw, dtype=np.float32),
        bias=b_raw.astype(np.float32),
        n_iter=int(result.nit),
        # A line search that cannot improve on float32 noise is convergence, not failure.
        converged=bool(result.success) or int(result.nit) < max_iter,
        train_seconds=time.perf_counter() - started,
    )


def _start_point(init: Head | None, classes: NDArray[Any], scaler: Scaler, d: int) -> NDArray[Any]:
    """L-BFGS's start: zeros, or ``init``'s weights back in the standardized space.

    Inverse of the fold in ``train_head``: W = W_raw · s, b = b_raw + m · W_raw, computed in
    float64 from the head's float32 numbers, so a head saved and loaded gives the same start.
    """
    n_classes = len(classes)
    start = np.zeros((d + 1, n_classes), dtype=np.float64)
    if init is None or len(init.classes) < 2:  # one class: nothing learned to start from
        return start.ravel()
    if init.dim != d:
        raise UsageError(f"the starting head has dimension {init.dim}; the embeddings have {d}")
    W_raw = init.weights.astype(np.float64)
    W = W_raw * scaler.scale.astype(np.float64)[:, None]
    b = init.bias.astype(np.float64) + scaler.mean.astype(np.float64) @ W_raw
    position = {label: j for j, label in enumerate(init.classes.tolist())}
    for column, label in enumerate(classes.tolist()):
        j = position.get(label)
        if j is not None:
            start[:d, column] = W[:, j]
            start[d, column] = b[j]
    # The objective's layout: W row-major [d, C], then the C biases.
    return np.concatenate([start[:d].ravel(), start[d]])
