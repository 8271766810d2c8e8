"""Weighted combinations of strategies: ``margin:0.7+typiclust:0.3`` as one strategy.

Uncertainty alone picks near-duplicates on the decision boundary; diversity alone ignores the
model. Lightly's selection config weighs several strategies by a "strength"; here a
combination is a strategy name like any other (on the command line, in ``alcli.toml``, as an
``auto`` candidate), written ``NAME[:WEIGHT]+NAME[:WEIGHT]...`` (weight 1 when left out).

The math (rank aggregation, a weighted Borda count; Dwork, Kumar, Naor & Sivakumar, Rank
aggregation methods for the web, WWW 2001): weights are normalised to sum to 1. Each
component ``i`` ranks the unlabeled items by its own order, asked for the top
``D = min(U, 4·b)`` (``U`` unlabeled items, budget ``b``); ``r_i(x)`` is ``x``'s 0-based place
there, and ``D`` for an item the component did not rank. The combination picks the ``b``
items with the smallest ``c(x) = Σ_i w_i · r_i(x)``; equal ``c`` goes to the lower pool index.
Its score is ``1 - c(x)/D`` (1: first for every component). Ranks, not raw scores: margins,
entropies and distances live on different scales (and greedy diversity strategies have no
per-item score beyond their own pick), while every strategy has an order. Deterministic: each
component's seed is drawn from the combination's generator in component order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alcli.errors import StrategyError

from ._select import Picks, SelectionContext, top_k

#: Each component ranks this many times the budget (capped at the unlabeled count).
DEPTH_FACTOR = 4

_PART = re.compile(r"^(?P<name>[A-Za-z_][\w.-]*)(?::(?P<weight>[^:+]+))?$")


@dataclass(frozen=True)
class Component:
    """One strategy of a combination and its weight (normalised: the weights sum to 1)."""

    name: str
    weight: float


def is_combination(name: str) -> bool:
    """A name with ``+`` or ``:`` is a combination spec, not a registered strategy."""
    return "+" in name or ":" in name


def parse(spec: str, canonical: Callable[[str], str]) -> tuple[Component, ...]:
    """The components of ``spec``; ``canonical`` maps a name to its registered name.

    Raises ``StrategyError`` for an empty part, a weight that is not a positive finite
    number, or a strategy named twice.
    """
    parts = [part.strip() for part in spec.replace(" ", "").split("+")]
    raw: list[tuple[str, float]] = []
    for part in parts:
        match = _PART.match(part)
        if not match:
            raise StrategyError(
                f"bad strategy combination {spec!r}: cannot read {part!r}",
                hint="write NAME:WEIGHT+NAME:WEIGHT, e.g. margin:0.7+typiclust:0.3",
            )
        text = match.group("weight")
        try:
            weight = 1.0 if text is None else float(text)
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise StrategyError(
                f"bad strategy combination {spec!r}: weight {text!r} of "
                f"{match.group('name')} must be a positive number",
                hint="e.g. margin:0.7+typiclust:0.3",
            )
        raw.append((canonical(match.group("name")), weight))
    names = [name for name, _ in raw]
    if len(set(names)) != len(names):
        raise StrategyError(f"bad strategy combination {spec!r}: a strategy is named twice")
    total = sum(weight for _, weight in raw)
    return tuple(Component(name, weight / total) for name, weight in raw)


def canonical_name(components: tuple[Component, ...]) -> str:
    """The combination's one spelling: registered names, normalised weights (6 digits)."""
    return "+".join(f"{c.name}:{c.weight:.6g}" for c in components)


RunFn = Callable[..., Picks]


def combined(components: tuple[Component, ...], run: RunFn) -> Callable[[SelectionContext], Picks]:
    """The strategy function of a combination; ``run`` is ``registry.run_with_scores``."""

    def combination(ctx: SelectionContext) -> Picks:
        n_unlabeled = int(ctx.unlabeled.size)
        depth = min(n_unlabeled, DEPTH_FACTOR * ctx.budget)
        seeds = ctx.rng.integers(0, 2**62, size=len(components))
        cost = np.zeros(n_unlabeled, dtype=np.float64)
        for component, seed in zip(components, seeds, strict=True):
            picks = run(
                component.name,
                budget=depth,
                probs=ctx.probs,
                committee=ctx.committee,
                embeddings=ctx.embeddings,
                labeled=ctx.labeled,
                seed=int(seed),
            )
            ranks = np.full(n_unlabeled, float(depth))
            ranks[np.searchsorted(ctx.unlabeled, picks.indices)] = np.arange(picks.indices.size)
            cost += component.weight * ranks
        order = top_k(cost, ctx.budget, largest=False)
        return Picks(ctx.unlabeled[order], 1.0 - cost[order] / max(depth, 1))

    return combination
