"""PSHEA: predictive successive halving with early stop (Algorithm 1 of the ALaaS paper).

Nobody knows in advance which strategy suits a pool and a budget, so the agent races them.
It pre-trains a head on ``initial`` random labels (accuracy a_0); then, every round, each
surviving strategy picks items with a head (its own set's, or in the default ``pooled``
spend every label's; see below), the picks are
labeled, each strategy's head is retrained and evaluated, a learning curve
a(n) = α − β·exp(−γ·n) is fitted to its history and forecast one round ahead, and the strategy
with the lowest forecast is eliminated. The run stops at the target accuracy, at the budget, or
on a plateau. The output is the round table, the learning curves and the labeled set.

Spend modes (``AutoConfig.spend``):

``paper``
    Algorithm 1 as written: every surviving strategy gets ``round_size`` picks per round, so
    early rounds cost up to |L|·R labels. The final model is the winner's head, trained on
    the winner's own set (initial + its picks); labels bought for eliminated strategies only
    served the race.
``shared``
    The race costs what one strategy would: each round's ``round_size`` labels are split
    across the survivors (R // |alive| each, the remainder to the best forecast of the last
    round, or the first candidate in round 1). Each strategy picks with, and is judged by, a
    head on initial + its own picks, so strategies stay comparable, but the final model is
    trained on every label bought, so no label is wasted.
``pooled`` (default since session 8)
    Split as in ``shared``, but every label bought is the team's: every survivor picks with
    the head on every label bought so far (the best model the run has), and a strategy's
    evidence in round t is a head on the labels bought before round t plus its own picks of
    round t, so all survivors are judged from the same base with the same number of picks.
    Why: in ``shared`` each strategy picked with a head on its own ~1/|alive| share of the
    labels, a much weaker model than the one the labels paid for, and its picks were worth
    less. On MNIST (50k pool, 7 candidates, target 0.93) ``shared`` needed 1.53x the labels
    of the best single strategy and ``pooled`` 1.12x; on the digits 1.24x and 1.13x
    (benchmarks/RESULTS.md, "Issue 18, session 8"). The survivors' curves now differ only by
    what their picks add to a common base, by less than the forecasts' bands, so ``pooled``
    also eliminates on paired evidence (``rules.eliminate_paired``, session 9): a survivor
    whose accuracy, in units of the round's spread, sums below −2.5·√rounds after 3 rounds
    goes. On MNIST that drops coreset (below the round's mean almost every round) on 2 of 3
    seeds, and ``pooled`` needs 1.01x the labels of the best single strategy (1.12x before).
    A round's evidence head adds only ~R/|alive| picks, so it cannot show what a strategy's
    picks do together to the model the run returns; from round 3 ``pooled`` also measures
    each survivor's leave-out contribution (the shared head against the head on every label
    but the rows only that survivor picked, ``state.picked``; paired on the eval rows) and
    drops a survivor whose picks are worth less per label than the others' by more than 2.5
    standard errors, if its paired standing is not positive (``rules.eliminate_low_yield``,
    session 10: BALD's picks among MNIST's candidates added almost nothing).

Accounting. Every label is bought once (``ledger``). The budget counts unique training labels,
the initial random set included (they are bought too); a round that would overshoot is
clamped, taking picks rank by rank across strategies until the budget is met. Evaluation
labels are not charged (``holdout``).

Elimination ties (forecasts within 1e-9): the lower current accuracy goes, then the name that
sorts last. The winner: in ``paper`` and ``shared``, the survivor whose own set's head has the
best current accuracy (then best forecast, then the name that sorts first), since its set is
what the run would go on with; in ``pooled``, where the returned model reads every label and a
survivor's accuracy is one round's picks on a common base, the survivor with the best paired
standing over all its rounds (``rules.choose_pooled_winner``; then current accuracy, then
name): the strategy whose picks added most on the evidence, never the last round's lucky
leader.

Stop rules, checked before every round in this order: ``target`` (the best accuracy of the
last round, the shared head's included, reaches the target; in ``pooled``, the shared head's
alone: it is the model the run returns), ``budget`` (labels bought reach
it), ``plateau`` (the best accuracy so far rose by less than ``plateau_delta``, default
0.1 pt, over the last ``plateau_rounds``, default 3), ``pool_exhausted`` (every item outside
the eval set is bought) and ``max_rounds``.

Cost. Heads dominate the agent's own time on real features (MNIST, 50k x 1280: about half of
it, the rest in the strategies). Each head starts from the one it succeeds and none is fitted
twice (``heads``); survivors that share a head object share one prediction over the pool
(``picks``).

Crash safety. The state is saved after every phase (``state``) and every head as soon as it
is trained (``heads``); every random draw comes from a seed derived from (seed, round,
strategy, purpose). So a run killed at any moment and resumed with the same inputs buys no
label twice and ends with the same report as an uninterrupted run. (The one window: a kill
between the oracle's answer and that write loses the answer, and resuming asks again.) An
oracle that answers later (``PendingLabels``) leaves the state saved with the picks it was
given, so the resumed run asks for exactly the same items.

The parts, one module each: ``config`` (settings, eval set), ``forecast`` (the learning
curve), ``rules`` (quotas, elimination, winner, stop), ``state`` (``state.json``), ``heads``
(the head store), ``ledger`` (labels bought), ``holdout`` (evaluation), ``picks`` (a round's
selection), ``race`` (the rounds), ``explain`` (the per-round notes), ``report`` and
``outputs`` (what a run tells and writes), ``run`` (``run_auto``).
"""

from __future__ import annotations

from alcli.agent.config import SPEND_MODES, AutoConfig, EvalSet
from alcli.agent.forecast import Forecast, forecast
from alcli.agent.heads import HEAD_MEMO_SIZE, HEADS_DIR, HeadStore
from alcli.agent.outputs import ProgressFn, Report, RoundRow, RoundSummary, plot_curves
from alcli.agent.rules import (
    TIE,
    choose_elimination,
    choose_winner,
    clamp_picks,
    rank_strategies,
    split_round,
    stop_reason,
)
from alcli.agent.run import run_auto
from alcli.agent.state import (
    STATE_FILE,
    STATE_VERSION,
    RunState,
    load_state,
    saved_config,
)

__all__ = [
    "HEADS_DIR",
    "HEAD_MEMO_SIZE",
    "SPEND_MODES",
    "STATE_FILE",
    "STATE_VERSION",
    "TIE",
    "AutoConfig",
    "EvalSet",
    "Forecast",
    "HeadStore",
    "ProgressFn",
    "Report",
    "RoundRow",
    "RoundSummary",
    "RunState",
    "choose_elimination",
    "choose_winner",
    "clamp_picks",
    "forecast",
    "load_state",
    "plot_curves",
    "rank_strategies",
    "run_auto",
    "saved_config",
    "split_round",
    "stop_reason",
]
