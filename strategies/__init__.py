"""The alcli strategy zoo (shipped as ``alcli.strategies``): pure functions of arrays.

``run(name, budget=..., probs=..., committee=..., embeddings=..., labeled=..., seed=...)``
returns int64 pool indices in pick order; ``run_with_scores`` adds each pick's score;
``available(pattern)`` lists the zoo; ``register`` adds a strategy, and third-party packages
add theirs through the ``alcli.strategies`` entry-point group (loaded lazily).

Conventions every strategy follows:

* Ties always break to the lower pool index: equal scores, equal distances, equal cluster
  sizes. Other toolkits break ties randomly or by sort accident; we chose the rule that makes
  results reproducible without a seed and easy to state.
* Randomness comes only from the ``seed`` (an int or a ``numpy.random.Generator``); the same
  inputs and seed give the same picks.
* Uncertainty, disagreement and hybrid strategies read a model's probabilities (or a
  committee's). Pass your own model's and no labels are needed; ``alcli select`` without
  ``--probs`` trains that model on your labels, so there it needs at least one labeled item.
  For a cold start (no labels, no model) use ``typiclust``, ``kmeans``, ``coreset`` or
  ``random``.
* Entropies are in nats; distances are Euclidean on the embeddings as given.
"""

from __future__ import annotations

from . import baselines, disagreement, diversity, hybrid, uncertainty
from ._select import Picks, SelectionContext
from .registry import (
    PluginWarning,
    StrategyInfo,
    available,
    check_needs,
    get,
    register,
    run,
    run_with_scores,
)

__all__ = [
    "Picks",
    "PluginWarning",
    "SelectionContext",
    "StrategyInfo",
    "available",
    "baselines",
    "check_needs",
    "disagreement",
    "diversity",
    "get",
    "hybrid",
    "register",
    "run",
    "run_with_scores",
    "uncertainty",
]
