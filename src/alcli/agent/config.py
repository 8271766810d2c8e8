"""What a PSHEA run is asked to do: its settings (saved with the run) and its eval set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli import strategies
from alcli.constraints import Balance, Constraints, check_min_distance, parse_balance
from alcli.errors import UsageError
from alcli.labels import match_labels
from alcli.learner.committee import POSTERIORS
from alcli.learner.graph import check_backend
from alcli.learner.semisup import GRAPH_SPACE_COMPONENTS, check_components, check_head

SPEND_MODES = ("shared", "pooled", "paper")
#: Spend modes that split R per round and train a head on every label bought.
SPLIT_MODES = ("shared", "pooled")
ELIMINATIONS = ("evidence", "every_round")
#: What a run saved before these settings existed did: resumed, it goes on doing it.
LEGACY = {
    "min_rounds": 1,
    "elimination": "every_round",
    "posterior": "bootstrap",
    "forecast_model": "exp",
    "graph_backend": "exact",
    "head_components": 0,
}


@dataclass(frozen=True)
class AutoConfig:
    """Everything that decides what ``run_auto`` buys and reports (saved in the state)."""

    target_accuracy: float
    budget: int
    strategies: tuple[str, ...]
    initial: int = 100
    round_size: int = 100
    seed: int = 0
    spend: str = "pooled"
    eval_frac: float | None = None
    plateau_rounds: int = 3
    plateau_delta: float = 0.001
    max_rounds: int | None = None
    committee_size: int = 5
    l2: float = 1.0
    #: Constraints on every candidate's picks (``alcli.constraints``): ``--balance`` as
    #: given, its class weights read once (None: uniform) so a resumed run needs no file.
    balance: str | None = None
    balance_weights: dict[str, float] | None = None
    min_distance: float | None = None
    #: The head every strategy's model is (``alcli.learner.semisup``).
    head: str = "logistic"
    #: Rounds a strategy races before it can be eliminated (``rules.eliminate_on_evidence``).
    min_rounds: int = 2
    #: "evidence" (confidence bands apart, after ``min_rounds``) or "every_round" (Algorithm 1).
    elimination: str = "evidence"
    #: The committee BALD and vote entropy read: "laplace" samples or "bootstrap" heads.
    posterior: str = "laplace"
    #: The learning-curve model of the forecasts (``forecast.MODELS``).
    forecast_model: str = "power"
    #: How the graph heads' kNN graph is built (``alcli.learner.graph.GRAPH_BACKENDS``).
    graph_backend: str = "auto"
    #: Principal components the graph heads' space keeps (0: every column; ``head_space``).
    head_components: int = GRAPH_SPACE_COMPONENTS

    def checked(self) -> AutoConfig:
        """This config with strategy names canonical and deduplicated; raises ``UsageError``."""
        if not 0 < self.target_accuracy <= 1:
            raise UsageError(f"target accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.spend not in SPEND_MODES:
            raise UsageError(
                f"unknown spend mode {self.spend!r}", hint="use pooled, shared or paper"
            )
        if self.initial < 1:
            raise UsageError(f"the initial random set needs at least 1 item, got {self.initial}")
        if self.budget < self.initial:
            raise UsageError(
                f"budget {self.budget} is smaller than the initial random set {self.initial}",
                hint="the initial labels are bought too; raise the budget or lower --initial",
            )
        if self.round_size < 1:
            raise UsageError(f"round size must be at least 1, got {self.round_size}")
        if self.eval_frac is not None and not 0 < self.eval_frac < 1:
            raise UsageError(f"eval fraction must be in (0, 1), got {self.eval_frac}")
        if self.plateau_rounds < 1 or self.committee_size < 1 or self.l2 <= 0:
            raise UsageError("plateau rounds and committee size must be >= 1, and l2 > 0")
        head = check_head(self.head)
        check_components(self.head_components)
        graph_backend = check_backend(self.graph_backend)
        if self.elimination not in ELIMINATIONS:
            raise UsageError(
                f"unknown elimination rule {self.elimination!r}", hint="use evidence or every_round"
            )
        if self.posterior not in POSTERIORS:
            raise UsageError(
                f"unknown posterior {self.posterior!r}", hint="use laplace or bootstrap"
            )
        if self.forecast_model not in ("power", "exp"):
            raise UsageError(f"unknown forecast model {self.forecast_model!r}", hint="power or exp")
        if self.min_rounds < 1:
            raise UsageError(f"min rounds must be at least 1, got {self.min_rounds}")
        names: list[str] = []
        for name in self.strategies:
            canonical = strategies.get(name).name
            if canonical not in names:
                names.append(canonical)
        if not names:
            raise UsageError("no candidate strategies", hint="name at least one strategy")
        if self.spend in SPLIT_MODES and self.round_size < len(names):
            raise UsageError(
                f"round size {self.round_size} cannot be shared by {len(names)} strategies",
                hint=f"use a round size of at least {len(names)}, or fewer strategies",
            )
        balance = self.balance_weights
        if self.balance is not None and balance is None:
            weights = parse_balance(self.balance).weights
            balance = None if weights is None else dict(weights)
        if self.min_distance is not None:
            check_min_distance(self.min_distance)
        return AutoConfig(
            **{
                **asdict(self),
                "strategies": tuple(names),
                "balance_weights": balance,
                "head": head,
                "graph_backend": graph_backend,
            }
        )

    def constraints(self) -> Constraints:
        """The constraints every candidate's picks keep (none by default)."""
        balance = None
        if self.balance is not None:
            balance = Balance(self.balance, self.balance_weights)
        return Constraints(balance=balance, min_distance=self.min_distance)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["strategies"] = list(self.strategies)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoConfig:
        known = {f.name for f in fields(cls)}
        values = {**LEGACY, **{k: v for k, v in data.items() if k in known}}
        values["strategies"] = tuple(values["strategies"])
        return cls(**values)


@dataclass(frozen=True)
class EvalSet:
    """Labeled items to measure accuracy on. Pool items among them are never picked."""

    uris: list[str]
    embeddings: NDArray[Any]
    labels: list[str]

    def __post_init__(self) -> None:
        if not (len(self.uris) == len(self.labels) == len(self.embeddings)):
            raise UsageError("eval set: uris, embeddings and labels differ in length")
        if not self.uris:
            raise UsageError("the eval set is empty", hint="give labeled items to evaluate on")

    @classmethod
    def from_pool(
        cls, uris: Sequence[str], embeddings: NDArray[Any], labels: Mapping[str, str]
    ) -> EvalSet:
        """The pool rows that ``labels`` names (an ``--eval`` file over pool items)."""
        rows, values = match_labels(
            uris,
            labels,
            what="eval",
            hint="embed the eval items as part of the pool, or fix the eval file's URIs",
        )
        return cls(
            uris=[uris[r] for r in rows], embeddings=np.asarray(embeddings[rows]), labels=values
        )
