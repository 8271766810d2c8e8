"""Baselines every active-learning comparison needs: uniform random sampling."""

from __future__ import annotations

from ._select import Picks, SelectionContext, no_scores
from .registry import register


@register(
    "random",
    family="baselines",
    needs=(),
    cost="O(n)",
    reference="the passive-learning baseline of every active-learning study "
    "(e.g. Settles, Active Learning Literature Survey, 2009)",
    aliases=("uniform", "passive"),
)
def random_sampling(ctx: SelectionContext) -> Picks:
    """Unlabeled items uniformly at random, without replacement; no score."""
    chosen = ctx.rng.choice(ctx.unlabeled.size, size=ctx.budget, replace=False)
    return no_scores(ctx.unlabeled[chosen])
