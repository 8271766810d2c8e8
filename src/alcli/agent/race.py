"""The race: pre-training, then rounds of picks, labels, heads, forecasts and eliminations.

Built on the pure rules (``rules``: quotas, elimination, stop, winner; ``forecast``), the run
state (``state``), the labels bought (``ledger``), the heads (``heads``) and the picks
(``picks``). Every phase saves the state before the next begins and then calls the phase hook
with its name (``initial:after_round``, ``round3:after_oracle``, ...): tests kill the process
there to prove that a resumed run ends as an uninterrupted one.

Forecast horizon: one round ahead at the next round's base quota, the same for every
strategy: R in ``paper`` mode, and in ``shared`` R // (|alive| − 1), the share each survivor
gets once this round's elimination is done (R // |alive| was the first rule; every forecast
then aimed short of the set size it was checked against, which inflated the recorded
forecast error on MNIST); in ``pooled`` the horizon adds that share to every label bought,
the base every survivor's next evidence head starts from. A round after which the run stops
eliminates nobody: elimination
only decides who races in the next round.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alcli.agent.config import SPLIT_MODES
from alcli.agent.explain import round_notes
from alcli.agent.forecast import Forecast, forecast
from alcli.agent.heads import HeadStore, labeled_key, rows_key
from alcli.agent.holdout import Holdout
from alcli.agent.ledger import Ledger, PhaseHook
from alcli.agent.outputs import Report, RoundRow, RoundSummary, with_overhead, write_outputs
from alcli.agent.picks import Picker
from alcli.agent.rules import (
    PAIRED_MIN_ROUNDS,
    choose_elimination,
    choose_pooled_winner,
    choose_winner,
    derive_seed,
    eliminate_low_yield,
    eliminate_on_evidence,
    eliminate_paired,
    forecast_band,
    leave_out_contribution,
    next_base_quota,
    paired_standing,
    rank_strategies,
    split_round,
    stop_reason,
)
from alcli.agent.state import Pending, RunState, SharedPoint
from alcli.learner import Head, HeadSpace, evaluate
from alcli.learner.semisup import SELFTRAIN

#: L-BFGS iterations of a ``pooled`` evidence head. It only measures what a strategy's picks
#: add to the base every survivor shares (nobody picks with it), and every survivor's starts
#: from the same base head, so all are compared at the same effort. On MNIST (50k x 1280,
#: 7 survivors, rounds of 700) fits to convergence (~70 iterations) were half the agent's
#: time: heads 47.6 s, 22.8 s capped at 25, 14.1 s at 10 (agent overhead 89 / 64 / 53 s). The
#: heads that pick and the final head are fitted to convergence.
#:
#: Under a self-training head (``selftrain``, ``graph_selftrain``) an evidence head is the
#: head's first step alone: the labeled rows in the head's space, no pseudo-labels, started
#: from that step on the round's base (the last shared head's own first step, kept by the
#: head store when the shared head was fitted: since session 12 not fitted again). The
#: survivors' picks reach the self-trained model only through that step (the pseudo-labels are
#: its confident predictions), while the refit fits ~30-44k pseudo-labelled rows that every
#: survivor shares, 100 picks being 0.2 % of them: ten iterations of it measured the cap more
#: than the picks, at ~20x the cost. MNIST, 8 rounds of 700 (RESULTS.md, issue 18, session
#: 10): evidence heads with the refit ~174 of the agent's 325 s, as the labeled step 11.4 s.
EVIDENCE_MAX_ITER = 10


class Race:
    """One PSHEA run over the pool ``X``, from its state to its report (``run``)."""

    def __init__(
        self,
        X: NDArray[Any],
        space: HeadSpace,
        state: RunState,
        *,
        out_dir: Path,
        ledger: Ledger,
        holdout: Holdout,
        save: Callable[[], None],
        phase: PhaseHook,
        progress: Callable[[RoundSummary], None] | None,
    ) -> None:
        self.state = state
        self.config = state.config
        self.out_dir = out_dir
        self.ledger = ledger
        self.holdout = holdout
        self.save = save
        self.phase = phase
        self.progress = progress
        self.store = HeadStore(out_dir, space, l2=self.config.l2, timed=state.timed)
        self.picker = Picker(X, space, state, ledger, holdout.blocked)
        #: Each survivor's head; survivors share one object while their sets are equal.
        self.heads: dict[str, Head] = {}

    def run(self) -> Report:
        """Pre-train if not done, race until a stop rule holds, then write the outputs."""
        if self.state.round < 0:
            self.pretrain()
        while True:
            reason = self.state.stop_reason or self.stop_reason()
            if reason is not None:
                return self.finish(reason)
            self.run_round(self.state.round + 1)

    # -- heads --

    def train(
        self, rows: Sequence[int], init: Head | None = None, *, max_iter: int | None = None
    ) -> Head:
        return self.store.train(rows, self.ledger.labels_of(rows), init, max_iter=max_iter)

    @property
    def self_training(self) -> bool:
        """Whether the head kind self-trains (``selftrain``, ``graph_selftrain``)."""
        return self.store.space.kind in SELFTRAIN

    def evidence_head(
        self, rows: Sequence[int], init: Head | None, *, max_iter: int | None = EVIDENCE_MAX_ITER
    ) -> Head:
        """A ``pooled`` evidence head on ``rows`` (timed as ``evidence``): under a self-training
        head its labeled step alone, since the picks reach the refit only through that step
        and the ~40k pseudo-labelled rows every survivor shares would swamp them (see
        ``EVIDENCE_MAX_ITER``); ``HeadStore.train`` ignores ``labeled_only`` for other kinds."""
        return self.store.train(
            rows,
            self.ledger.labels_of(rows),
            init,
            max_iter=max_iter,
            labeled_only=True,
            part="evidence",
        )

    def head_for(self, name: str) -> Head:
        """The head ``name`` picks with: its own (``shared``, ``paper``), or the one on every
        label bought (``pooled``)."""
        if self.config.spend == "pooled":
            return self.shared_head()
        if name not in self.heads:
            self.heads[name] = self.train(self.state.sets[name])
        return self.heads[name]

    def shared_head(self) -> Head:
        """The head on every label bought so far (saved as ``state.shared_head``)."""
        rows = self.ledger.bought_rows()
        key = self.state.shared_head
        head = self.store.get(key) if key == rows_key(rows) else None
        return head if head is not None else self.train(rows)

    def accuracy(self, head: Head) -> float:
        with self.state.timed("evaluation"):
            return evaluate(head, self.holdout.X, self.holdout.y).accuracy

    # -- round 0 --

    def pretrain(self) -> None:
        """Round 0: the initial random set, its head and a_0 (every strategy starts there)."""
        state, config = self.state, self.config
        if not state.initial_rows:
            free = np.flatnonzero(~self.holdout.blocked)
            rng = np.random.default_rng(derive_seed(config.seed, "initial"))
            drawn = rng.choice(free, size=config.initial, replace=False)
            state.initial_rows = sorted(int(r) for r in drawn)
            self.save()
        initial = state.initial_rows
        self.ledger.buy(initial, state.labels, "initial:after_oracle")
        head = self.train(initial)
        state.shared_head = rows_key(initial)
        a0 = self.accuracy(head)
        bought = len(state.labels)
        for name in config.strategies:
            state.sets[name] = list(initial)
            self.heads[name] = head
            state.rows.append(RoundRow(0, name, len(initial), bought, a0, None, False))
        state.shared.append(SharedPoint(round=0, labels=bought, accuracy=a0))
        state.round = 0
        self.save()
        self.phase("initial:after_round")
        self.report_progress(0, None, a0)

    # -- rounds --

    def stop_reason(self) -> str | None:
        state = self.state
        last = state.last_accuracies()
        if self.config.spend == "pooled" and state.shared and state.shared[-1].round == state.round:
            # the target is the returned model's, the head on every label bought; an evidence
            # head is a capped probe on fewer labels (a run stopped on one at 0.96 on the
            # digits while the model it returned was below)
            last = [state.shared[-1].accuracy]
        return stop_reason(
            self.config,
            rnd=state.round,
            last=last,
            best=state.best(),
            bought=len(state.labels),
            buyable=int((~self.holdout.blocked).sum()),
        )

    def quotas(self) -> dict[str, int]:
        forecasts = {name: fc.value for name, fc in self.state.forecasts().items()}
        ranked = rank_strategies(self.state.alive, forecasts, self.state.current())
        return split_round(self.config.round_size, ranked, self.config.spend)

    def run_round(self, rnd: int) -> None:
        """Pick (or take the saved picks), buy, retrain and forecast, eliminate, save."""
        state = self.state
        pending = state.pending
        if pending is None or pending.round != rnd:
            quotas = self.quotas()
            classes = self.ledger.classes(self.holdout.y)
            picks = self.picker.pick(rnd, quotas, self.head_for, classes)
            state.pending = pending = Pending(round=rnd, picks=picks, quota=quotas)
            self.save()
            self.phase(f"round{rnd}:after_select")
        order = [row for name in state.alive for row in pending.picks[name]]
        self.ledger.buy(list(dict.fromkeys(order)), state.labels, f"round{rnd}:after_oracle")
        for name in state.alive:
            mine = state.picked.setdefault(name, [])
            seen = set(mine)  # a resumed round records its picks once
            mine.extend(r for r in pending.picks[name] if r not in seen)
        new_rows, forecasts = self.train_survivors(rnd, pending.picks)
        state.rows.extend(new_rows)  # before the shared head: its point names the round's leader
        shared_acc = self.train_shared(rnd) if self.config.spend in SPLIT_MODES else None
        state.curves.update(forecasts)
        state.round = rnd
        state.pending = None
        eliminated = self.eliminate(rnd) if self.stop_reason() is None else None
        self.save()
        keep = [rows_key(state.sets[name]) for name in state.alive]
        if state.shared_head:  # and its first step, the next round's evidence base
            keep += [state.shared_head, labeled_key(state.shared_head)]
        self.store.prune(keep)
        self.phase(f"round{rnd}:after_round")
        self.report_progress(rnd, eliminated, shared_acc)

    def train_survivors(
        self, rnd: int, picks: dict[str, list[int]]
    ) -> tuple[list[RoundRow], dict[str, Forecast]]:
        """Each survivor's set grown by its picks, its head retrained (from its last one) and
        evaluated, and its learning curve forecast one round ahead."""
        state, config = self.state, self.config
        next_quota = next_base_quota(config.round_size, len(state.alive), config.spend)
        bought = len(state.labels)
        pooled = config.spend == "pooled"
        if pooled:  # every strategy's evidence starts from the labels bought before this round
            new = {r for name in state.alive for r in picks[name]}
            base = [r for r in self.ledger.bought_rows() if r not in new]
            base_set = set(base)
            shared_before = self.store.get(state.shared_head) if state.shared_head else None
            if self.self_training:  # the labeled step of the base, every survivor's common start
                shared_before = self.evidence_head(base, shared_before, max_iter=None)
        new_rows: list[RoundRow] = []
        forecasts: dict[str, Forecast] = {}
        for i, name in enumerate(state.alive):
            if pooled:
                previous, start, have = shared_before, base, base_set
            else:
                previous, start = self.head_for(name), state.sets[name]
                have = set(start)
            rows = start + [r for r in picks[name] if r not in have]
            state.sets[name] = rows
            if pooled:
                self.heads[name] = self.evidence_head(rows, previous)
            else:
                self.heads[name] = self.train(rows, init=previous)
            acc = self.accuracy(self.heads[name])
            if i == 0:
                self.phase(f"round{rnd}:after_train")
            history = [*state.history(name), (len(rows), acc)]
            horizon = (bought if pooled else len(rows)) + next_quota
            with state.timed("forecasts"):
                fc = forecast(
                    [n for n, _ in history],
                    [a for _, a in history],
                    horizon,
                    model=self.config.forecast_model,
                )
            forecasts[name] = fc
            new_rows.append(RoundRow(rnd, name, len(rows), bought, acc, fc.value, False, horizon))
        return new_rows, forecasts

    def train_shared(self, rnd: int) -> float:
        """The head on every label bought (``shared`` spend), from the last one; its accuracy."""
        state = self.state
        rows = self.ledger.bought_rows()
        init = self.store.get(state.shared_head) if state.shared_head else None
        head = self.train(rows, init=init)
        with state.timed("evaluation"):
            evaluation = evaluate(head, self.holdout.X, self.holdout.y)
        state.shared_head = rows_key(rows)
        bought = collections.Counter(state.labels.values())
        this_round = {row.strategy: row.accuracy for row in state.rows if row.round == rnd}
        state.shared.append(
            SharedPoint(
                round=rnd,
                labels=len(state.labels),
                accuracy=evaluation.accuracy,
                ece=round(evaluation.ece, 5),
                per_class={str(k): round(v, 5) for k, v in evaluation.per_class.items()},
                bought_by_class={str(k): bought[k] for k in sorted(bought)},
                leader=min(this_round, key=lambda s: (-this_round[s], s)) if this_round else None,
            )
        )
        return evaluation.accuracy

    def eliminate(self, rnd: int) -> str | None:
        """Drop the survivor with the lowest forecast, if two race and the evidence says so
        (``eliminate_on_evidence``: enough rounds, confidence bands apart); in ``pooled``
        spend, else the one the paired evidence puts below the others (``eliminate_paired``),
        else the one whose picks make the shared head worse (``eliminate_low_yield``)."""
        state = self.state
        if len(state.alive) < 2:
            return None
        forecasts = {name: fc.value for name, fc in state.forecasts().items()}
        if self.config.elimination == "every_round":
            gone: str | None = choose_elimination(forecasts, state.current())
        else:
            gone = eliminate_on_evidence(
                forecasts,
                state.current(),
                band=forecast_band(state.rows),
                rnd=rnd,
                min_rounds=self.config.min_rounds,
            )
            if self.config.spend == "pooled":
                leave_out = self.leave_out(rnd)  # measured (and reported) every round it can be
                if gone is None:
                    gone = eliminate_paired(
                        state.rows, state.alive, min_rounds=self.config.min_rounds
                    )
                if gone is None:
                    gone = eliminate_low_yield(
                        leave_out,
                        rnd=rnd,
                        min_rounds=self.config.min_rounds,
                        standing=paired_standing(state.rows),
                    )
        if gone is None:
            return None
        state.rows = [
            replace(row, eliminated=True) if row.round == rnd and row.strategy == gone else row
            for row in state.rows
        ]
        state.alive = [name for name in state.alive if name != gone]
        self.heads.pop(gone, None)
        return gone

    def leave_out(self, rnd: int) -> dict[str, tuple[float, float, int]]:
        """Each survivor's leave-out contribution to the shared head (``pooled``, from the
        rounds ``eliminate_low_yield`` reads on): the head on every label bought but the rows
        only that survivor picked (``state.picked``; a row another strategy, eliminated or
        not, also picked stays), started from the shared head and fitted with the evidence
        heads' cap, against the shared head on the eval rows (under a self-training head, its
        labeled step on both sides). Recorded with the round's
        shared point (``SharedPoint.leave_out``: [delta, se, picks])."""
        state = self.state
        if rnd < max(self.config.min_rounds, PAIRED_MIN_ROUNDS) or len(state.alive) < 2:
            return {}
        rows = self.ledger.bought_rows()
        shared = self.shared_head()
        if self.self_training:  # both sides are the labeled step, as in ``evidence_head``
            shared = self.evidence_head(rows, shared, max_iter=None)
        correct = self.correct(shared)
        result: dict[str, tuple[float, float, int]] = {}
        for name in state.alive:
            others = {r for o, picked in state.picked.items() if o != name for r in picked}
            mine = set(state.picked.get(name, ())) - others
            if not mine:
                result[name] = (0.0, 0.0, 0)
                continue
            without = [r for r in rows if r not in mine]
            head = self.evidence_head(without, shared)
            result[name] = (*leave_out_contribution(correct, self.correct(head)), len(mine))
        if state.shared and state.shared[-1].round == rnd:
            leave_out = {k: [round(d, 5), round(e, 5), n] for k, (d, e, n) in result.items()}
            state.shared[-1] = replace(state.shared[-1], leave_out=leave_out)
        return result

    def correct(self, head: Head) -> NDArray[np.bool_]:
        """Which eval rows ``head`` gets right."""
        with self.state.timed("evaluation"):
            predicted = head.predict(self.holdout.X)
        return np.asarray(predicted == np.asarray(self.holdout.y))

    def report_progress(self, rnd: int, eliminated: str | None, shared_acc: float | None) -> None:
        if self.progress is None:
            return
        state = self.state
        summary = RoundSummary(
            round=rnd,
            rows=[row for row in state.rows if row.round == rnd],
            alive=list(state.alive),
            eliminated=eliminated,
            labels_bought=len(state.labels),
            best_accuracy=state.best()[-1],
            shared_accuracy=shared_acc,
        )
        self.progress(summary)

    # -- finish --

    def finish(self, reason: str) -> Report:
        """The final head (every label bought, or the winner's set), the report, the files."""
        state, config = self.state, self.config
        if state.stop_reason is None:
            state.stop_reason = reason
            self.save()
        forecasts = {name: fc.value for name, fc in state.forecasts().items()}
        if config.spend == "pooled":
            winner = choose_pooled_winner(state.rows, state.current())
        else:
            winner = choose_winner(state.current(), forecasts)
        final_rows = (
            self.ledger.bought_rows() if config.spend in SPLIT_MODES else state.sets[winner]
        )
        head = self.train(final_rows)
        evaluation = evaluate(head, self.holdout.X, self.holdout.y)
        report = Report(
            rows=list(state.rows),
            winner=winner,
            stop_reason=state.stop_reason,
            final_accuracy=evaluation.accuracy,
            final_evaluation=evaluation.as_dict(),
            final_labels=len(final_rows),
            labels_bought=len(state.labels),
            eval_labels=len(state.eval_labels),
            spend=config.spend,
            rounds=state.round,
            config=config.as_dict(),
            shared_accuracy=[asdict(point) for point in state.shared],
            curves={name: asdict(fc) for name, fc in state.curves.items()},
            timings=with_overhead(state.timings),
            strategy_seconds=dict(state.strategy_seconds),
            out_dir=str(self.out_dir),
            final_head=head,
            round_notes=round_notes(
                state.rows,
                state.shared,
                head=config.head,
                spend=config.spend,
                initial_by_class=collections.Counter(
                    str(state.labels[self.ledger.uris[r]]) for r in state.initial_rows
                ),
            ),
        )
        self.phase("final:before_outputs")
        labeled = {uri: state.labels[uri] for uri in (self.ledger.uris[r] for r in final_rows)}
        write_outputs(self.out_dir, report, labeled, state.eval_labels)
        return report
