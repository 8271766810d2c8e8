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
* Uncertainty, disagreement and hybrid strategies need at least one labeled item (their
  probabilities come from a model trained on labels); for a cold start use ``typiclust``,
  ``kmeans``, ``coreset`` or ``random``.
* Entropies are in nats; distances are Euclidean on the embeddings as given.
"""

from __future__ import annotations

from . import baselines, disagreement, diversity, hybrid, uncertainty
from ._select import Picks, SelectionContext
from .registry import (
    PluginWarning,
    StrategyInfo,
    available,
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
    "disagreement",
    "diversity",
    "get",
    "hybrid",
    "register",
    "run",
    "run_with_scores",
    "uncertainty",
]
