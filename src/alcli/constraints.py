"""Constraints on any strategy's picks: per-class quotas (``--balance``) and a minimum
cosine distance (``--min-distance``).

A layer over the strategy's order, not a strategy: the strategy ranks the unlabeled items
(``run_with_scores`` asked for ``depth`` picks, more than the budget) and the picks are the
first items of that order that the constraints allow. When the constraints reject too many,
the strategy is asked again for four times the depth, up to every unlabeled item (or
``MAX_DEPTH_FACTOR`` x the budget for strategies that are not cheap to rank deep). So the
layer composes with every strategy, plugins and combinations included, and works on the
ranked candidate list only (it never reads the whole pool's embeddings: just the rows of the
candidates it examines and of the labeled items).

Balance (modAL #162: uncertainty picks crowd into one or two confusable classes): each
pick's group is the class the head predicts for it (argmax of the probabilities; cold start,
no head: its k-means cluster of the embeddings). Quotas ``q_g`` split the budget ``b`` by the
target weights ``w_g`` (uniform: equal) by largest remainder: ``floor(b·w_g)`` each, the
rest one by one to the largest fractional parts (ties: group order). Each group fills in the
strategy's order; when a group has too few candidates even at full depth, the free places go
to the next candidates of the other groups in the strategy's order (reported per group as
target vs picked).

Minimum distance: cosine distance ``1 - <x, y>/(|x||y|)`` on the embeddings; a candidate is
skipped when it is closer than ``R`` to a labeled (or excluded) item or to an earlier pick.
Exact and greedy in the strategy's order: candidates are examined in blocks of ``BLOCK``; a
block's similarities to the labeled items and to the picks so far are matrix products (BLAS),
then the block is walked in order with its own Gram matrix. The cost is the examined
candidates x (labeled + picks) x d, independent of the pool size; numpy's matrix product
measured faster than faiss-cpu's exact search on this machine (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli import strategies
from alcli.errors import UsageError

#: Candidates examined per matrix product in the minimum-distance check.
BLOCK = 1024
#: Labeled rows compared per matrix product (bounds the block x labeled similarity matrix).
LABELED_CHUNK = 16384
#: The deepest a strategy outside CHEAP_FAMILIES is asked to rank, in budgets.
MAX_DEPTH_FACTOR = 32
#: Families whose full ranking costs about a sort (top-k of a per-item score).
CHEAP_FAMILIES = frozenset({"baselines", "uncertainty", "disagreement"})
#: k-means clusters standing in for classes at a cold start (no head).
COLD_START_CLUSTERS = 10


@dataclass(frozen=True)
class Balance:
    """Target share per class: ``weights`` (class -> weight, summing to 1), None = uniform."""

    spec: str
    weights: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Constraints:
    """What the picks must satisfy; the default constrains nothing."""

    balance: Balance | None = None
    min_distance: float | None = None

    @property
    def active(self) -> bool:
        return self.balance is not None or self.min_distance is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "balance": None if self.balance is None else self.balance.spec,
            "min_distance": self.min_distance,
        }


def parse(balance: str | None, min_distance: float | None) -> Constraints:
    """``--balance`` and ``--min-distance`` as given; ``UsageError`` for a bad value."""
    return Constraints(
        balance=None if balance is None else parse_balance(balance),
        min_distance=None if min_distance is None else check_min_distance(min_distance),
    )


def check_min_distance(value: float) -> float:
    """A cosine distance: in (0, 2]."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 2):
        raise UsageError(
            f"--min-distance must be a cosine distance in (0, 2], got {value!r}",
            hint="e.g. --min-distance 0.05 (near-duplicates are closer than that)",
        )
    return float(value)


def parse_balance(spec: str) -> Balance:
    """``uniform``, or a file of ``class,weight`` lines (a header line is allowed)."""
    if spec.strip().lower() == "uniform":
        return Balance("uniform")
    try:
        with open(spec, encoding="utf-8-sig", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UsageError(
            f"--balance: no such file: {spec}", hint="give 'uniform' or a class,weight CSV"
        ) from None
    except OSError as exc:
        raise UsageError(f"--balance: cannot read {spec}: {exc.strerror}") from None
    weights: dict[str, float] = {}
    first = True
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label, sep, value = line.rpartition(",")
        label = label.strip().strip('"')
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
            if first:  # a header line: class,weight
                first = False
                continue
        first = False
        if not sep or not label or not (math.isfinite(weight) and weight >= 0):
            raise UsageError(
                f"--balance: {spec}:{number}: expected class,weight with a weight >= 0, "
                f"got {line.strip()!r}"
            )
        if label in weights:
            raise UsageError(f"--balance: {spec}:{number}: class {label!r} given twice")
        weights[label] = weight
    total = sum(weights.values())
    if not weights or total <= 0:
        raise UsageError(f"--balance: {spec}: no class has a positive weight")
    return Balance(spec, {label: w / total for label, w in weights.items()})


@dataclass
class Groups:
    """Each pool row's group (its predicted class, or its cluster) and the groups' names."""

    of_row: NDArray[np.int64]
    names: list[str]
    by: str  # "class" or "cluster"


def class_groups(probs: NDArray[Any], classes: Sequence[Any] | NDArray[Any] | None) -> Groups:
    """Groups by the head's predicted class; ``classes`` names the probability columns."""
    names = [str(c) for c in classes] if classes is not None else []
    if len(names) != probs.shape[1]:
        names = [str(i) for i in range(probs.shape[1])]
    return Groups(np.argmax(probs, axis=1).astype(np.int64), names, "class")


def cluster_groups(embeddings: NDArray[Any], k: int, seed: int) -> Groups:
    """Cold start: k-means clusters of the embeddings stand in for classes."""
    from alcli.strategies._kmeans import kmeans

    result = kmeans(embeddings, k, np.random.default_rng(seed))
    labels = np.empty(embeddings.shape[0], dtype=np.int64)
    labels[result.rows] = result.labels
    count = int(result.centres.shape[0])
    return Groups(labels, [f"cluster {i}" for i in range(count)], "cluster")


def quotas(budget: int, balance: Balance, names: Sequence[str]) -> NDArray[np.int64]:
    """The budget split by the target weights, by largest remainder (ties: group order)."""
    if balance.weights is None:
        weights = np.full(len(names), 1.0 / max(len(names), 1))
    else:
        unknown = sorted(set(balance.weights) - set(names))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise UsageError(
                f"--balance: {balance.spec} names classes the labels do not have: {shown}",
                hint=f"the classes are: {', '.join(names[:20])}",
            )
        weights = np.array([balance.weights.get(name, 0.0) for name in names])
    exact = budget * weights
    out = np.floor(exact).astype(np.int64)
    rest = budget - int(out.sum())
    order = np.lexsort((np.arange(len(names)), -(exact - out)))
    out[order[:rest]] += 1
    return out


@dataclass
class ConstraintReport:
    """What the constraints did: per group target and picked, skipped candidates, depth."""

    constraints: Constraints
    depth: int = 0
    examined: int = 0
    skipped_min_distance: int = 0
    by: str | None = None
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    spread: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.constraints.as_dict(), "depth": self.depth}
        out["examined"] = self.examined
        if self.constraints.min_distance is not None:
            out["skipped_min_distance"] = self.skipped_min_distance
        if self.by is not None:
            out["balance_by"] = self.by
            out["groups"] = self.groups
        return out


def constrained_pick(
    name: str,
    *,
    budget: int,
    constraints: Constraints,
    embeddings: NDArray[Any] | None,
    labeled: NDArray[np.bool_],
    near: NDArray[np.int64] | None = None,
    groups: Groups | None = None,
    probs: NDArray[Any] | None = None,
    committee: NDArray[Any] | None = None,
    seed: int = 0,
) -> tuple[strategies.Picks, ConstraintReport]:
    """The first ``budget`` items of strategy ``name``'s order that the constraints allow.

    ``labeled``: rows never picked (a mask); ``near``: rows picks must keep ``min_distance``
    from (default: the ``labeled`` rows); ``groups``: each row's group, needed for balance.
    The strategy sees the same inputs as without constraints.
    """
    report = ConstraintReport(constraints)
    info = strategies.get(name)
    n_unlabeled = int((~labeled).sum())
    budget = min(budget, n_unlabeled)
    if constraints.min_distance is not None and embeddings is None:
        raise UsageError("--min-distance needs embeddings (it compares items by them)")
    if constraints.balance is not None and groups is None:
        raise UsageError("--balance needs the head's classes or the embeddings' clusters")
    cap = n_unlabeled if info.family in CHEAP_FAMILIES else MAX_DEPTH_FACTOR * budget
    cap = max(min(cap, n_unlabeled), budget)
    depth = min(cap, 2 * budget)
    near_rows = np.flatnonzero(labeled) if near is None else np.asarray(near, dtype=np.int64)
    while True:
        ranked = strategies.run_with_scores(
            name,
            budget=depth,
            probs=probs,
            committee=committee,
            embeddings=embeddings,
            labeled=labeled,
            seed=seed,
        )
        chosen, examined, skipped = _walk(
            ranked.indices, budget, constraints, embeddings, near_rows, groups, final=depth >= cap
        )
        if chosen.size >= budget or depth >= cap:
            break
        depth = min(cap, 4 * depth)
    report.depth, report.examined, report.skipped_min_distance = depth, examined, skipped
    position = {int(row): i for i, row in enumerate(ranked.indices)}
    chosen = np.array(sorted(chosen.tolist(), key=position.__getitem__), dtype=np.int64)
    scores = ranked.scores[[position[int(r)] for r in chosen]]
    if groups is not None:
        report.by = groups.by
        picked = np.bincount(groups.of_row[chosen], minlength=len(groups.names))
        targets = (
            quotas(budget, constraints.balance, groups.names)
            if constraints.balance is not None
            else np.zeros(len(groups.names), dtype=np.int64)
        )
        report.groups = {
            name: {"target": int(t), "picked": int(p)}
            for name, t, p in zip(groups.names, targets, picked, strict=True)
            if t or p
        }
    return strategies.Picks(chosen, scores.astype(np.float64)), report


def _walk(
    order: NDArray[np.int64],
    budget: int,
    constraints: Constraints,
    embeddings: NDArray[Any] | None,
    near_rows: NDArray[np.int64],
    groups: Groups | None,
    *,
    final: bool,
) -> tuple[NDArray[np.int64], int, int]:
    """(picks, candidates examined, skipped for distance) along ``order``.

    With balance, a candidate whose group is full waits in ``overflow``; at the last depth
    (``final``) the places left after every candidate are filled from it, in order.
    """
    limit = None if constraints.min_distance is None else 1.0 - constraints.min_distance
    need = None
    if constraints.balance is not None and groups is not None:
        need = quotas(budget, constraints.balance, groups.names)
    taken: list[int] = []
    picked_vectors: list[NDArray[np.float32]] = []
    overflow: list[int] = []
    skipped = examined = 0
    near = (
        _unit(np.asarray(embeddings[np.sort(near_rows)]))
        if limit is not None and embeddings is not None and near_rows.size
        else None
    )
    for start in range(0, order.size, BLOCK):
        if len(taken) >= budget:
            break
        block = order[start : start + BLOCK]
        allowed = np.ones(block.size, dtype=bool)
        gram = None
        if limit is not None and embeddings is not None:
            vectors = _unit(np.asarray(embeddings[block]))
            if near is not None:
                allowed &= _max_similarity(vectors, near) <= limit
            if picked_vectors:
                allowed &= _max_similarity(vectors, np.vstack(picked_vectors)) <= limit
            gram = vectors @ vectors.T
        accepted_here: list[int] = []
        for j, row in enumerate(block.tolist()):
            if len(taken) >= budget:
                break
            examined += 1
            if not allowed[j]:
                skipped += 1
                continue
            if need is not None and groups is not None:
                g = int(groups.of_row[row])
                if need[g] <= 0:
                    overflow.append(row)
                    continue
                need[g] -= 1
            taken.append(row)
            accepted_here.append(j)
            if gram is not None and limit is not None:
                allowed[j + 1 :] &= gram[j, j + 1 :] <= limit
        if gram is not None and accepted_here:
            picked_vectors.append(vectors[accepted_here])
    if final and len(taken) < budget and overflow:
        taken.extend(_fill(overflow, budget - len(taken), taken, embeddings, limit))
    return np.array(taken, dtype=np.int64), examined, skipped


def _fill(
    overflow: list[int],
    room: int,
    taken: list[int],
    embeddings: NDArray[Any] | None,
    limit: float | None,
) -> list[int]:
    """Candidates of full groups for the places no group could fill, distance kept."""
    if limit is None or embeddings is None:
        return overflow[:room]
    added: list[int] = []
    kept = _unit(np.asarray(embeddings[np.array(taken, dtype=np.int64)])) if taken else None
    for row in overflow:
        if len(added) >= room:
            break
        vector = _unit(np.asarray(embeddings[[row]]))
        if kept is not None and float((kept @ vector[0]).max()) > limit:
            continue
        added.append(row)
        kept = vector if kept is None else np.vstack([kept, vector])
    return added


def _unit(x: NDArray[Any]) -> NDArray[np.float32]:
    """Rows scaled to length 1 (a zero row stays zero: similarity 0 to everything)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def _max_similarity(vectors: NDArray[np.float32], others: NDArray[np.float32]) -> NDArray[Any]:
    """Each row of ``vectors``' largest cosine similarity to ``others`` (unit rows)."""
    best = np.full(vectors.shape[0], -np.inf, dtype=np.float32)
    for start in range(0, others.shape[0], LABELED_CHUNK):
        np.maximum(best, (vectors @ others[start : start + LABELED_CHUNK].T).max(axis=1), out=best)
    return best
