"""The race's rules as pure functions: who gets how many picks, who goes, who wins, when to stop.

Pure so each can be tested on its own (tests/test_agent.py) and read in one place; the race
(``alcli.agent.race``) only feeds them the run's numbers.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from alcli.agent.config import AutoConfig
from alcli.agent.outputs import RoundRow

#: Forecasts closer than this are a tie.
TIE = 1e-9


def rank_strategies(
    alive: Sequence[str], forecasts: Mapping[str, float], accuracies: Mapping[str, float]
) -> list[str]:
    """Survivors best first: forecast, then current accuracy, then name; as given without
    forecasts (round 1), which is the candidate order."""
    if not all(name in forecasts for name in alive):
        return list(alive)
    return sorted(alive, key=lambda s: (-forecasts[s], -accuracies[s], s))


def split_round(round_size: int, ranked: Sequence[str], spend: str) -> dict[str, int]:
    """Picks per strategy this round: R each (paper), or R shared with the remainder to the
    best-ranked (shared)."""
    if spend == "paper":
        return dict.fromkeys(ranked, round_size)
    base, extra = divmod(round_size, len(ranked))
    quotas = dict.fromkeys(ranked, base)
    quotas[ranked[0]] += extra
    return quotas


def next_base_quota(round_size: int, alive: int, spend: str) -> int:
    """Picks every survivor gets next round, once this round eliminated one (if it can): the
    forecasts' horizon, the same for every strategy."""
    if spend == "paper":
        return round_size
    return round_size // max(1, alive - 1)


def clamp_picks(
    picks: Mapping[str, Sequence[int]], *, already_bought: set[int], budget_left: int
) -> dict[str, list[int]]:
    """Keep at most ``budget_left`` new items, taken rank by rank across strategies (in the
    mapping's order), so an overshooting last round shortens every strategy's list evenly.
    Picks already bought are free and always kept."""
    new: list[int] = []
    seen: set[int] = set()
    for rank in range(max((len(p) for p in picks.values()), default=0)):
        for rows in picks.values():
            if rank < len(rows) and rows[rank] not in seen and rows[rank] not in already_bought:
                seen.add(rows[rank])
                new.append(rows[rank])
    kept = set(new[: max(budget_left, 0)]) | already_bought
    return {name: [r for r in rows if r in kept] for name, rows in picks.items()}


def choose_elimination(forecasts: Mapping[str, float], accuracies: Mapping[str, float]) -> str:
    """The strategy to drop: lowest forecast; within ``TIE`` of it, the lower current accuracy,
    then the name that sorts last."""
    lowest = min(forecasts.values())
    tied = [s for s, value in forecasts.items() if value - lowest <= TIE]
    return max(tied, key=lambda s: (-accuracies[s], s))


#: Smallest half-width of a forecast's confidence band (accuracy): 0.5 point. Below it two
#: curves are within the eval set's own noise (10,000 items: ±0.3 point at 0.9 accuracy).
MIN_BAND = 0.005
#: The band until the run has measured this many of its own one-round forecast errors.
PRIOR_BAND = 0.01
MIN_ERRORS = 3


def forecast_band(rows: Sequence[RoundRow]) -> float:
    """Half-width of a one-round forecast's confidence band: the run's own mean absolute
    one-round forecast error so far (each forecast against the accuracy measured a round
    later; its horizon assumed one elimination, so it may be a few labels off), at least
    ``MIN_BAND``; ``PRIOR_BAND`` until ``MIN_ERRORS`` are measured."""
    by_strategy: dict[str, list[RoundRow]] = {}
    for row in rows:
        by_strategy.setdefault(row.strategy, []).append(row)
    errors = []
    for history in by_strategy.values():
        history.sort(key=lambda r: r.round)
        for before, after in itertools.pairwise(history):
            if before.forecast is not None and after.round == before.round + 1:
                errors.append(abs(before.forecast - after.accuracy))
    if len(errors) < MIN_ERRORS:
        return PRIOR_BAND
    return max(MIN_BAND, float(np.mean(errors)))


def eliminate_on_evidence(
    forecasts: Mapping[str, float],
    accuracies: Mapping[str, float],
    *,
    band: float,
    rnd: int,
    min_rounds: int,
) -> str | None:
    """``choose_elimination``'s candidate, only when the evidence says so: the race has run
    ``min_rounds`` rounds, and the candidate's band lies wholly below the best forecast's
    (forecast + band < best − band). Otherwise None: every survivor races another round."""
    if rnd < min_rounds or len(forecasts) < 2:
        return None
    gone = choose_elimination(forecasts, accuracies)
    if forecasts[gone] + band >= max(forecasts.values()) - band:
        return None
    return gone


#: Paired elimination (``pooled``): a strategy goes once its summed per-round standing is
#: below ``-PAIRED_Z`` · √rounds. Under "all survivors equal" each round's standing has mean 0
#: and variance below 1, so the bound is ~2.5 σ: one-sided 0.6 % per strategy and check.
PAIRED_Z = 2.5
#: Rounds of evidence a strategy has before the paired rule can drop it.
PAIRED_MIN_ROUNDS = 3
#: Floor of a round's spread across survivors (accuracy): 0.05 point, below which survivors
#: are tied, not ranked (on MNIST late rounds differ by ~0.1 point).
MIN_SPREAD = 0.0005


def paired_standing(rows: Sequence[RoundRow]) -> dict[str, tuple[float, int]]:
    """Per strategy: its summed standing over the rounds it raced and how many rounds that is.

    A round's standing is (accuracy − the round's mean) / the round's spread (standard
    deviation across that round's survivors, at least ``MIN_SPREAD``), over rounds ≥ 1 with
    two or more survivors. In ``pooled`` spend every survivor's evidence head starts from the
    same base and adds as many picks, so the survivors of one round are paired: the base's
    noise cancels, and what is left is what each strategy's picks added. Standardizing by the
    round's spread lets early rounds (gaps of points) and late ones (tenths) count alike.
    """
    by_round: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.round >= 1:
            by_round.setdefault(row.round, {})[row.strategy] = row.accuracy
    standing: dict[str, tuple[float, int]] = {}
    for rnd in sorted(by_round):
        accs = by_round[rnd]
        if len(accs) < 2:
            continue
        values = np.array(list(accs.values()))
        spread = max(float(values.std(ddof=1)), MIN_SPREAD)
        mean = float(values.mean())
        for name, acc in accs.items():
            total, count = standing.get(name, (0.0, 0))
            standing[name] = (total + (acc - mean) / spread, count + 1)
    return standing


def paired_scores(rows: Sequence[RoundRow]) -> dict[str, tuple[float, int]]:
    """Per strategy: its summed standing / √rounds (the statistic ``eliminate_paired`` bounds
    and the report shows) and its number of rounds."""
    return {
        name: (total / float(np.sqrt(count)), count)
        for name, (total, count) in paired_standing(rows).items()
    }


def eliminate_paired(
    rows: Sequence[RoundRow], alive: Sequence[str], *, min_rounds: int
) -> str | None:
    """The survivor whose paired standing (``paired_standing``) is worst, if it is below the
    confidence bound (sum < −``PAIRED_Z`` · √rounds) after at least ``min_rounds`` rounds
    (and ``PAIRED_MIN_ROUNDS``); otherwise None. For ``pooled`` spend only, where the
    forecasts' bands (``eliminate_on_evidence``) are wider than the survivors' gaps: on MNIST
    no strategy was ever eliminated by them, while coreset stood below the round's mean in
    nearly every round."""
    if len(alive) < 2:
        return None
    need = max(min_rounds, PAIRED_MIN_ROUNDS)
    scores = {
        name: score
        for name, (score, count) in paired_scores(rows).items()
        if name in alive and count >= need
    }
    if not scores:
        return None
    worst = min(scores, key=lambda s: (scores[s], s))
    return worst if scores[worst] < -PAIRED_Z else None


#: Leave-out elimination (``pooled``): a survivor goes once its picks are worth less to the
#: shared head, per label, than the other survivors' average by more than ``HARM_Z``
#: standard errors (the same one-sided ~0.6 % per check as ``PAIRED_Z``).
HARM_Z = PAIRED_Z


def leave_out_contribution(
    correct_with: NDArray[np.bool_], correct_without: NDArray[np.bool_]
) -> tuple[float, float]:
    """What some training rows add to a head, on the eval rows: accuracy with them − without,
    and its standard error from the eval rows the two heads disagree on (the paired, McNemar
    view: both heads are scored on the same rows, so only the disagreements carry noise)."""
    diff = correct_with.astype(np.float64) - correct_without.astype(np.float64)
    n = diff.shape[0]
    delta = float(diff.mean())
    variance = float(np.mean(diff != 0)) - delta * delta
    return delta, float(np.sqrt(max(variance, 0.0) / n))


def yield_gaps(
    contributions: Mapping[str, tuple[float, float, int]],
) -> dict[str, tuple[float, float]]:
    """Per survivor: how far its leave-out contribution falls short of what the others' picks
    are worth per label, at its own number of picks, and that gap's standard error.

    ``contributions``: name → (delta, se, picks): ``leave_out_contribution`` of the rows only
    it picked, and how many. The others' worth per label is the mean of their delta / picks;
    its error is their spread / √others, so candidates that differ a lot among themselves
    make the reference uncertain and the rule slow to fire. Gap = delta − picks · reference;
    its variance = se² + (picks · reference error)². Survivors with no picks of their own, or
    fewer than two others to compare with, get none."""
    rates = {name: d / n for name, (d, _, n) in contributions.items() if n > 0}
    gaps: dict[str, tuple[float, float]] = {}
    for name, (delta, se, picks) in contributions.items():
        others = np.array([r for o, r in rates.items() if o != name])
        if picks <= 0 or others.size < 2:
            continue
        reference = float(others.mean())
        reference_se = float(others.std(ddof=1)) / float(np.sqrt(others.size))
        gap = delta - picks * reference
        gaps[name] = (gap, float(np.hypot(se, picks * reference_se)))
    return gaps


def eliminate_low_yield(
    contributions: Mapping[str, tuple[float, float, int]],
    *,
    rnd: int,
    min_rounds: int,
    standing: Mapping[str, tuple[float, int]] | None = None,
) -> str | None:
    """The survivor whose picks (the rows no other strategy also picked, over every round)
    yield the shared head least against the others' (``yield_gaps``), if its gap is below
    −``HARM_Z`` standard errors, after at least ``min_rounds`` rounds (and
    ``PAIRED_MIN_ROUNDS``); otherwise None. Only survivors the paired evidence does not put
    above the mean (``standing``: ``paired_standing``, summed standing ≤ 0) can go: the two
    views must agree, which keeps a strategy whose picks overlap the others' (so few are
    its own, and the leave-out sees little of them) but that helps round by round.

    For ``pooled`` spend, beside ``eliminate_paired``: a survivor's evidence head adds one
    round's picks (~12 on MNIST) to the common base, a comparison too noisy to show which
    picks the returned model gains little from. Measured on MNIST (session 10,
    benchmarks/auto_candidates.py): BALD's picks added 0.0-0.3 point to the shared head for
    24-64 labels, the good candidates' 0.3-1.2 for 12-57, yet BALD stood mid-field round by
    round, and with it among the candidates the run needed 19-35 % more labels. Its picks
    are not harmful in themselves (the head is not better without them): they are worth
    little, and every one displaces a pick worth more."""
    if rnd < max(min_rounds, PAIRED_MIN_ROUNDS) or len(contributions) < 3:
        return None
    gaps = yield_gaps(contributions)
    if standing is not None:
        gaps = {name: gap for name, gap in gaps.items() if standing.get(name, (0.0, 0))[0] <= 0}
    if not gaps:
        return None
    z = {
        name: gap / se if se > 0 else (-np.inf if gap < 0 else 0.0)
        for name, (gap, se) in gaps.items()
    }
    worst = min(z, key=lambda s: (z[s], s))
    gap, se = gaps[worst]
    return worst if gap + HARM_Z * se < 0 else None


def choose_winner(accuracies: Mapping[str, float], forecasts: Mapping[str, float]) -> str:
    """Best current accuracy, then best forecast (none yet: the accuracy), then the name that
    sorts first. For ``paper`` and ``shared`` spend, where each survivor's accuracy is its
    own set's head: the winner's set is what the run would go on with."""

    def rank(s: str) -> tuple[float, float, str]:
        return (-accuracies[s], -forecasts.get(s, accuracies[s]), s)

    return min(accuracies, key=rank)


def choose_pooled_winner(rows: Sequence[RoundRow], accuracies: Mapping[str, float]) -> str:
    """``pooled`` spend: the survivor with the best paired score over every round it raced
    (``paired_scores``), then the best current accuracy, then the name that sorts first.

    In ``pooled`` a round's evidence head adds only that round's ~R/|alive| picks to a common
    base, so the last round's leader is one draw of a noisy paired comparison: on MNIST
    (session 10) BALD led the last round and was reported the winner with a paired score of
    −0.57 while margin stood at +2.39. Survivors raced the same rounds, so the summed standing
    ranks them on all the evidence. Before round 1 (no standing yet) it is ``choose_winner``'s
    rule on the accuracies."""
    scores = {name: score for name, (score, _) in paired_scores(rows).items()}

    def rank(s: str) -> tuple[float, float, str]:
        return (-scores.get(s, 0.0), -accuracies[s], s)

    return min(accuracies, key=rank)


def stop_reason(
    config: AutoConfig,
    *,
    rnd: int,
    last: Sequence[float],
    best: Sequence[float],
    bought: int,
    buyable: int,
) -> str | None:
    """Why the run stops before round ``rnd + 1``, or None; checked in this order.

    ``last``: the accuracies of round ``rnd`` (the shared head's included); ``best``: the best
    accuracy so far after each round; ``bought``: training labels bought; ``buyable``: pool
    items outside the eval set.
    """
    if max(last) >= config.target_accuracy:
        return "target"
    if bought >= config.budget:
        return "budget"
    k = config.plateau_rounds
    if len(best) > k and best[-1] - best[-1 - k] < config.plateau_delta:
        return "plateau"
    if bought >= buyable:
        return "pool_exhausted"
    if config.max_rounds is not None and rnd >= config.max_rounds:
        return "max_rounds"
    return None


def derive_seed(seed: int, *parts: int | str) -> int:
    """A seed from (seed, parts): independent of how many draws came before (crash-safe)."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence([int(seed), *words]).generate_state(1)[0])
