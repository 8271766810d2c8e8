"""A round's picks: each survivor's strategy run on a model of its own labeled set.

Every random draw comes from a seed derived from (seed, round, strategy, purpose), so a
resumed run draws the same. Survivors share a head object until their sets differ (round 1:
the initial head), and the pool's probabilities under one head are computed once.
Strategies receive the same probabilities array and must not write to it (they are pure
functions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli import strategies
from alcli.agent.ledger import Ledger
from alcli.agent.rules import clamp_picks, derive_seed
from alcli.agent.state import RunState
from alcli.constraints import class_groups, constrained_pick
from alcli.learner import Head, HeadSpace
from alcli.strategy_inputs import StrategyInputs, strategy_inputs


class Picker:
    """Picks for the survivors of ``state`` over the pool ``X``; ``held_out`` is never picked."""

    def __init__(
        self,
        X: NDArray[Any],
        space: HeadSpace,
        state: RunState,
        ledger: Ledger,
        held_out: NDArray[np.bool_],
    ) -> None:
        self.X = X
        self.space = space
        self.state = state
        self.ledger = ledger
        self.held_out = held_out
        self.constraints = state.config.constraints()

    def blocked(self, name: str) -> NDArray[np.bool_]:
        """Rows strategy ``name`` may not pick: held out, or already in its set."""
        mask = self.held_out.copy()
        mask[np.asarray(self.rows_of(name), dtype=np.int64)] = True
        return mask

    def rows_of(self, name: str) -> list[int]:
        """The labeled rows ``name``'s picking head was trained on: its own set, or (``pooled``)
        every label bought."""
        if self.state.config.spend == "pooled":
            return self.ledger.bought_rows()
        return self.state.sets[name]

    def pick(
        self,
        rnd: int,
        quotas: Mapping[str, int],
        head_for: Callable[[str], Head],
        classes: NDArray[Any],
    ) -> dict[str, list[int]]:
        """Every survivor's picks for round ``rnd``, clamped to the budget left.

        ``head_for(name)``: the head on ``name``'s set; ``classes``: every label seen so far.
        """
        state, seed = self.state, self.state.config.seed
        picks: dict[str, list[int]] = {}
        probs_by_head: dict[int, NDArray[np.float32]] = {}
        for name in state.alive:
            needs = strategies.get(name).needs
            blocked = self.blocked(name)
            budget = min(quotas[name], int((~blocked).sum()))
            if budget <= 0:
                picks[name] = []
                continue
            inputs = self.model_inputs(rnd, name, head_for, classes, probs_by_head)
            started = time.perf_counter()
            with state.timed("selection"):
                if self.constraints.active:
                    chosen = self.constrained(
                        name, budget, inputs, blocked, rnd, head_for, classes, probs_by_head
                    )
                else:
                    chosen = strategies.run(
                        name,
                        budget=budget,
                        probs=inputs.probs,
                        committee=inputs.committee,
                        # only to those that read it: a streamed pool is never gathered
                        embeddings=self.X if "embeddings" in needs else None,
                        labeled=blocked,
                        seed=derive_seed(seed, rnd, name, "select"),
                    )
            spent = state.strategy_seconds.get(name, 0.0) + time.perf_counter() - started
            state.strategy_seconds[name] = spent
            picks[name] = [int(r) for r in chosen]
        return self.clamp(picks)

    def constrained(
        self,
        name: str,
        budget: int,
        inputs: StrategyInputs,
        blocked: NDArray[np.bool_],
        rnd: int,
        head_for: Callable[[str], Head],
        classes: NDArray[Any],
        probs_by_head: dict[int, NDArray[np.float32]],
    ) -> NDArray[np.int64]:
        """``name``'s picks under the run's ``--balance``/``--min-distance``: groups by the
        class its head predicts; distances kept from its own labeled set."""
        groups = None
        if self.constraints.balance is not None:
            head = head_for(name)
            probs = probs_by_head.get(id(head))
            if probs is None:
                rows = self.rows_of(name)
                probs = strategy_inputs(
                    {"probs"},
                    self.space.pool,
                    rows,
                    self.ledger.labels_of(rows),
                    scaler=self.space.scaler,
                    seed=0,
                    committee_size=1,
                    head=head,
                    classes=classes,
                    space=self.space,
                ).probs
                assert probs is not None
                probs_by_head[id(head)] = probs
            groups = class_groups(probs, classes)
        picks, _ = constrained_pick(
            name,
            budget=budget,
            constraints=self.constraints,
            embeddings=self.X,
            labeled=blocked,
            near=np.asarray(self.rows_of(name), dtype=np.int64),
            groups=groups,
            probs=inputs.probs,
            committee=inputs.committee,
            seed=derive_seed(self.state.config.seed, rnd, name, "select"),
        )
        return picks.indices

    def model_inputs(
        self,
        rnd: int,
        name: str,
        head_for: Callable[[str], Head],
        classes: NDArray[Any],
        probs_by_head: dict[int, NDArray[np.float32]],
    ) -> StrategyInputs:
        """What strategy ``name`` reads from its head (or committee); nothing if it needs none.

        ``probs_by_head`` remembers the pool's probabilities under each head this round.
        """
        needs = strategies.get(name).needs
        if not {"probs", "committee"} & set(needs):
            return StrategyInputs(probs=None, committee=None)
        head, rows, config = head_for(name), self.rows_of(name), self.state.config
        inputs = strategy_inputs(
            needs,
            self.space.pool,
            rows,
            self.ledger.labels_of(rows),
            scaler=self.space.scaler,
            seed=derive_seed(config.seed, rnd, name, "committee"),
            committee_size=config.committee_size,
            l2=config.l2,
            head=head,
            probs=probs_by_head.get(id(head)),
            classes=classes,
            space=self.space,
            posterior=config.posterior,
        )
        for part, seconds in inputs.seconds.items():
            self.state.timings[part] = self.state.timings.get(part, 0.0) + seconds
        if inputs.probs is not None:
            probs_by_head[id(head)] = inputs.probs
        return inputs

    def clamp(self, picks: dict[str, list[int]]) -> dict[str, list[int]]:
        """``picks`` within the budget left; those already bought are free."""
        bought = {r for rows in picks.values() for r in rows if self.ledger.is_bought(r)}
        budget_left = self.state.config.budget - len(self.state.labels)
        return clamp_picks(picks, already_bought=bought, budget_left=budget_left)
