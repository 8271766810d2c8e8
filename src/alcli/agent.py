"""PSHEA: predictive successive halving with early stop (Algorithm 1 of the ALaaS paper).

Nobody knows in advance which strategy suits a pool and a budget, so the agent races them.
It pre-trains a head on ``initial`` random labels (accuracy a_0); then, every round, each
surviving strategy picks items with a head trained on *its own* labeled set, the picks are
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
``shared`` (default)
    The race costs what one strategy would: each round's ``round_size`` labels are split
    across the survivors (R // |alive| each, the remainder to the best forecast of the last
    round, or the first candidate in round 1). Each strategy's curve still comes from a head
    on initial + its own picks, so strategies stay comparable, but the final model is trained
    on every label bought, so no label is wasted.

Accounting. Labels live in one store: an item picked by two strategies (or again by one
after it was bought for another) is asked of the oracle and charged once. The budget counts
unique training labels, the initial random set included (they are bought too); a round that
would overshoot is clamped, taking picks rank by rank across strategies until the budget is
met. Evaluation labels are not charged: with ``EvalSet`` they are given; with
``eval_frac`` the agent holds out that fraction of the pool and buys its labels once, reported
as ``eval_labels``. Held-out items are never picked.

Forecasts (``forecast``). Fitted with ``scipy.optimize.curve_fit``, bounded (0 ≤ α ≤ 1,
β ≥ 0, γ > 0; internally on n rescaled to [0, 1], see ``_fit_curve``), from three distinct
points on. With one point the forecast is that accuracy; with two (or when a fit fails) it is
the straight line through the last two points, clipped to [0, 1]. The horizon is one round
ahead at the next round's base quota, the same for every strategy: R in ``paper`` mode, and in
``shared`` R // (|alive| − 1), the share each survivor gets once this round's elimination is
done (R // |alive| was the first rule; every forecast then aimed short of the set size it was
checked against, which inflated the recorded forecast error on MNIST).

Elimination ties (forecasts within 1e-9): the lower current accuracy goes, then the name that
sorts last. The winner is the survivor with the best current accuracy (then best forecast,
then the name that sorts first).

Stop rules, checked before every round in this order: ``target`` (the best accuracy of the
last round, the shared head's included, reaches the target), ``budget`` (labels bought reach
it), ``plateau`` (the best accuracy so far rose by less than ``plateau_delta``, default
0.1 pt, over the last ``plateau_rounds``, default 3), ``pool_exhausted`` (every item outside
the eval set is bought) and ``max_rounds``. A round after which the run stops eliminates
nobody: elimination only decides who races in the next round.

Outputs in ``out_dir``: ``labeled.csv`` (``shared``: every label bought; ``paper``: the
winner's set), ``eval.csv`` (bought eval labels), ``rounds.csv``, ``report.json``,
``curves.png`` and ``head.npz`` (the final head, ``alcli.learner.load_head``).

Cost. Heads dominate the agent's own time on real features (MNIST, 50k x 1280: about half of
it, the rest in the strategies). Each head starts from the one it succeeds (a strategy's
head from its previous round's, the shared head from the last shared head, a committee from
its strategy's head): a round adds a few hundred rows, so L-BFGS needs about a third of the
iterations of a cold start (``alcli.learner``). None is fitted twice: ``train`` looks a head
up by its training rows first, which makes the final head (the last round's shared head, or
the winner's) free; and survivors that share a head object (round 1: the initial head) share
one prediction over the pool. Strategies receive the same probabilities array and must not
write to it (they are pure functions).

Crash safety. ``out_dir/state.json`` is rewritten atomically (temp file + ``os.replace``)
after selection, as soon as the oracle answers (before any training) and after each round.
Every random draw comes from a seed derived from (seed, round, strategy, purpose). A head is
a deterministic function of its rows and its starting head, and every head is written to
``out_dir/heads/<rows digest>.npz`` (atomically) as soon as it is trained (committee members
are not: they are redrawn from their seed and their strategy's saved head), so a resumed run
finds the exact heads the interrupted one started from; heads no saved state refers to are
deleted after each round. So a run killed at any moment and resumed with the same inputs buys
no label twice and ends with the same report as an uninterrupted run. (The one window: a kill
between the oracle's answer and that write loses the answer, and resuming asks again.) An
oracle that answers later (``PendingLabels``) leaves the state saved with the picks it was
given, so the resumed run asks for exactly the same items.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import signal
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import OptimizeWarning, curve_fit

import alcli.strategies as strategies  # noqa: PLR0402 - mypy cannot map strategies/ here
from alcli.errors import OracleError, UsageError
from alcli.learner import (
    Head,
    Scaler,
    evaluate,
    fit_scaler,
    load_head,
    train_committee,
    train_head,
)
from alcli.oracle import Oracle, format_labels_csv, write_atomic
from alcli.selection import match_labels

SPEND_MODES = ("shared", "paper")
STATE_FILE = "state.json"
#: Folder of ``out_dir`` holding every head the saved state may start a later head from.
HEADS_DIR = "heads"
STATE_VERSION = 1
#: Environment variable naming a checkpoint at which the process SIGKILLs itself (tests only).
CRASH_ENV = "ALCLI_TEST_CRASH_AT"
#: Forecasts closer than this are a tie.
TIE = 1e-9
#: Heads remembered by their training rows (a round's survivors and shared head fit).
HEAD_MEMO_SIZE = 16

ProgressFn = Callable[["RoundSummary"], None]


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoConfig:
    """Everything that decides what ``run_auto`` buys and reports (saved in the state)."""

    target_accuracy: float
    budget: int
    strategies: tuple[str, ...]
    initial: int = 100
    round_size: int = 100
    seed: int = 0
    spend: str = "shared"
    eval_frac: float | None = None
    plateau_rounds: int = 3
    plateau_delta: float = 0.001
    max_rounds: int | None = None
    committee_size: int = 5
    l2: float = 1.0

    def checked(self) -> AutoConfig:
        """This config with strategy names canonical and deduplicated; raises ``UsageError``."""
        if not 0 < self.target_accuracy <= 1:
            raise UsageError(f"target accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.spend not in SPEND_MODES:
            raise UsageError(f"unknown spend mode {self.spend!r}", hint="use shared or paper")
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
        names: list[str] = []
        for name in self.strategies:
            canonical = strategies.get(name).name
            if canonical not in names:
                names.append(canonical)
        if not names:
            raise UsageError("no candidate strategies", hint="name at least one strategy")
        if self.spend == "shared" and self.round_size < len(names):
            raise UsageError(
                f"round size {self.round_size} cannot be shared by {len(names)} strategies",
                hint=f"use a round size of at least {len(names)}, or fewer strategies",
            )
        return AutoConfig(**{**asdict(self), "strategies": tuple(names)})

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["strategies"] = list(self.strategies)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
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


def saved_config(out_dir: str | os.PathLike[str]) -> AutoConfig:
    """The config of the run saved in ``out_dir`` (what ``alcli auto --resume DIR`` reuses)."""
    return AutoConfig.from_dict(_read_state(Path(out_dir))["config"])


# --- learning-curve forecaster ---------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """Predicted accuracy at ``n_next`` labels, and how it was obtained."""

    value: float
    method: str  # "curve", "linear" or "last"
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None

    def curve(self, n: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """The fitted a(n), where there is one."""
        if self.alpha is None or self.beta is None or self.gamma is None:
            return None
        return self.alpha - self.beta * np.exp(-self.gamma * np.asarray(n, dtype=np.float64))


def _neg_exp(x: NDArray[np.float64], alpha: float, beta: float, gamma: float) -> Any:
    return alpha - beta * np.exp(-gamma * x)


def forecast(n: Sequence[float], acc: Sequence[float], n_next: float) -> Forecast:
    """Forecast accuracy at ``n_next`` from a strategy's history of (labels, accuracy).

    Repeated n keep their last accuracy. Three or more distinct points: the bounded fit of
    a(n) = α − β·exp(−γ·n). Two: the line through them. One: that accuracy. Always in [0, 1].
    """
    history: dict[float, float] = {}
    for ni, ai in zip(n, acc, strict=True):
        history[float(ni)] = float(ai)
    xs = np.array(sorted(history), dtype=np.float64)
    ys = np.array([history[x] for x in xs], dtype=np.float64)
    if len(xs) == 0:
        raise ValueError("forecast needs at least one point")
    if len(xs) >= 3:
        fitted = _fit_curve(xs, ys, float(n_next))
        if fitted is not None:
            return fitted
    if len(xs) == 1:
        return Forecast(value=_clip01(ys[-1]), method="last")
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return Forecast(value=_clip01(ys[-1] + slope * (float(n_next) - xs[-1])), method="linear")


def _fit_curve(xs: NDArray[np.float64], ys: NDArray[np.float64], n_next: float) -> Forecast | None:
    """Bounded least squares on a well-conditioned form of the curve.

    Fitted as a(x) = α − b·exp(−g·x) with x = (n − n₀)/(n_max − n₀) in [0, 1], so b = α − a(n₀)
    lies in [0, 1] and g in (0, 50] (50: the curve may saturate within 2 % of the range seen).
    Unbounded β and γ let a jumpy history be "explained" by a step function, slowly and with
    absurd forecasts. Converted back: β = b·exp(γ·n₀), γ = g / (n_max − n₀).
    """
    origin, span = float(xs[0]), float(xs[-1] - xs[0])
    x = (xs - origin) / span
    alpha0 = min(1.0, float(ys.max()) + 0.02)
    b0 = min(1.0, max(alpha0 - float(ys[0]), 1e-3))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = curve_fit(
                _neg_exp,
                x,
                ys,
                p0=(alpha0, b0, 3.0),
                bounds=((0.0, 0.0, 1e-6), (1.0, 1.0, 50.0)),
                method="trf",
                maxfev=2000,
            )
    except (RuntimeError, ValueError):
        return None
    alpha, b, g = (float(p) for p in params)
    value = float(_neg_exp(np.array([(n_next - origin) / span]), alpha, b, g)[0])
    gamma = g / span
    beta = b * math.exp(min(gamma * origin, 700.0))
    if not all(math.isfinite(v) for v in (alpha, beta, gamma, value)):
        return None
    return Forecast(value=_clip01(value), method="curve", alpha=alpha, beta=beta, gamma=gamma)


def _clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


# --- controller rules (pure, so they can be tested on their own) -----------------------------


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


# --- report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundRow:
    """One strategy in one round: its set size, accuracy, forecast and fate."""

    round: int
    strategy: str
    labels: int
    labels_bought_total: int
    accuracy: float
    forecast: float | None
    eliminated: bool
    forecast_at: int | None = None  # the set size the forecast is for


@dataclass(frozen=True)
class RoundSummary:
    """What the progress callback gets after each round (round 0 is the pre-training)."""

    round: int
    rows: list[RoundRow]
    alive: list[str]
    eliminated: str | None
    labels_bought: int
    best_accuracy: float
    shared_accuracy: float | None


@dataclass
class Report:
    """The outcome of ``run_auto``; ``as_dict`` is what ``report.json`` holds."""

    rows: list[RoundRow]
    winner: str
    stop_reason: str
    final_accuracy: float
    final_evaluation: dict[str, Any]
    final_labels: int
    labels_bought: int
    eval_labels: int
    spend: str
    rounds: int
    config: dict[str, Any]
    shared_accuracy: list[dict[str, Any]]
    curves: dict[str, dict[str, Any]]
    timings: dict[str, float]
    strategy_seconds: dict[str, float]
    out_dir: str
    final_head: Head | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "stop_reason": self.stop_reason,
            "final_accuracy": self.final_accuracy,
            "final_labels": self.final_labels,
            "labels_bought": self.labels_bought,
            "eval_labels": self.eval_labels,
            "spend": self.spend,
            "rounds": self.rounds,
            "final_evaluation": self.final_evaluation,
            "config": self.config,
            "rows": [asdict(row) for row in self.rows],
            "shared_accuracy": self.shared_accuracy,
            "curves": self.curves,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "strategy_seconds": {k: round(v, 4) for k, v in self.strategy_seconds.items()},
            "out_dir": self.out_dir,
        }


# --- state -------------------------------------------------------------------------------------


def _read_state(out_dir: Path) -> dict[str, Any]:
    path = out_dir / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no alcli auto run to resume in {out_dir}", hint="start one without --resume"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable run state ({exc})") from None
    if state.get("version") != STATE_VERSION:
        raise UsageError(f"{path}: state version {state.get('version')} is not supported")
    return state


def _rows_key(rows: Sequence[int] | NDArray[np.int64]) -> str:
    """A head's name: the digest of its training rows, in order (labels never change)."""
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


def _save_head(head: Head, path: Path) -> None:
    """``Head.save`` through a temporary file and ``os.replace``: all or nothing."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    head.save(str(tmp))
    os.replace(tmp, path)


def _derive_seed(seed: int, *parts: int | str) -> int:
    """A seed from (seed, parts): independent of how many draws came before (crash-safe)."""
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence([int(seed), *words]).generate_state(1)[0])


def _pool_digest(uris: Sequence[str], embeddings: NDArray[Any]) -> str:
    """Identity of the pool: its URIs in order, the array's shape and a few rows' bytes."""
    digest = hashlib.sha256()
    for uri in uris:
        digest.update(uri.encode("utf-8", "surrogateescape"))  # non-UTF-8 names too
        digest.update(b"\n")
    n = embeddings.shape[0]
    digest.update(repr(embeddings.shape).encode())
    for row in sorted({0, n // 2, n - 1}):
        digest.update(np.ascontiguousarray(embeddings[row], dtype=np.float32).tobytes())
    return digest.hexdigest()


def _checkpoint(name: str) -> None:
    """Tests name a checkpoint in ``ALCLI_TEST_CRASH_AT``; the process dies there like kill -9."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the agent ---------------------------------------------------------------------------------


class _Agent:
    """One PSHEA run over cached embeddings; all durable facts live in ``self.state``."""

    def __init__(
        self,
        uris: Sequence[str],
        embeddings: NDArray[Any],
        oracle: Oracle,
        config: AutoConfig,
        out_dir: Path,
        eval_set: EvalSet | None,
        progress: ProgressFn | None,
    ) -> None:
        self.uris = list(uris)
        self.X = embeddings
        self.oracle = oracle
        self.config = config
        self.out_dir = out_dir
        self.progress = progress
        self.given_eval = eval_set
        self.row_of = {uri: row for row, uri in enumerate(self.uris)}
        if len(self.row_of) != len(self.uris):
            raise UsageError("the pool lists a URI twice", hint="deduplicate the pool")
        self.scaler: Scaler = fit_scaler(embeddings)
        self.heads: dict[str, Head] = {}
        self.head_memo: dict[str, Head] = {}  # by the rows' digest, oldest first
        self.state: dict[str, Any] = {}
        self.eval_X: NDArray[Any] = np.empty((0, embeddings.shape[1]), dtype=np.float32)
        self.eval_y: list[str] = []
        self.blocked_base = np.zeros(len(self.uris), dtype=bool)

    # -- persistence --

    def fresh_state(self, digest: str) -> None:
        self.state = {
            "version": STATE_VERSION,
            "config": self.config.as_dict(),
            "pool_digest": digest,
            "n_pool": len(self.uris),
            "round": -1,  # last completed round; 0 = pre-training done
            "eval_rows": None,
            "eval_labels": {},
            "labels": {},
            "initial_rows": [],
            "sets": {},
            "history": {},
            "alive": list(self.config.strategies),
            "rows": [],
            "shared": [],
            "shared_head": None,  # digest of the last shared head's rows (HEADS_DIR)
            "best": [],
            "forecasts": {},
            "curves": {},
            "pending": None,
            "stop_reason": None,
            "timings": {},
            "strategy_seconds": {},
        }

    def save(self) -> None:
        started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out_dir / STATE_FILE, json.dumps(self.state, separators=(",", ":")))
        self.tick("io", started)

    def tick(self, key: str, started: float) -> None:
        timings = self.state["timings"]
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - started

    # -- labels --

    def buy(self, rows: Sequence[int], store: dict[str, str], checkpoint: str) -> None:
        """Ask the oracle for the rows' labels and save them before anything else happens."""
        wanted = [self.uris[r] for r in rows if self.uris[r] not in store]
        if wanted:
            started = time.perf_counter()
            answer = self.oracle.label(wanted)
            self.tick("oracle", started)
            missing = [uri for uri in wanted if uri not in answer]
            if missing:
                raise OracleError(
                    f"the oracle returned no label for {len(missing)} of {len(wanted)} URIs "
                    f"(first: {', '.join(missing[:3])})"
                )
            for uri in wanted:
                store[uri] = str(answer[uri])
            self.save()
        _checkpoint(checkpoint)

    def bought_rows(self) -> list[int]:
        """The pool rows of every training label bought, in pool order (the shared head's)."""
        return sorted(self.row_of[uri] for uri in self.state["labels"])

    def label_of(self, rows: Sequence[int]) -> list[str]:
        labels = self.state["labels"]
        return [labels[self.uris[r]] for r in rows]

    def classes(self) -> NDArray[Any]:
        """Every label seen so far: probabilities are aligned to these for the strategies."""
        seen = set(self.state["labels"].values()) | set(self.eval_y)
        return np.array(sorted(seen))

    # -- heads --

    def train(self, rows: Sequence[int], init: Head | None = None) -> Head:
        """The head on ``rows`` (in that order), started from ``init``; each is fitted once.

        Looked up first in memory, then in ``out_dir/heads`` (a resumed run): whatever started
        it, a head trained on these rows is a valid one, and returning the saved one is what
        keeps a resumed run identical. A label never changes once bought, so the final head
        (the last round's shared head, or the winner's) and a set that gained nothing cost no
        second fit. A new head is saved before it is used.
        """
        rows_arr = np.asarray(rows, dtype=np.int64)
        key = _rows_key(rows_arr)
        head = self.saved_head(key)
        if head is None:
            started = time.perf_counter()
            head = train_head(
                self.X[rows_arr],
                self.label_of(rows),
                l2=self.config.l2,
                scaler=self.scaler,
                init=init,
            )
            self.tick("heads", started)
            self.store_head(key, head)
        self.head_memo[key] = head
        while len(self.head_memo) > HEAD_MEMO_SIZE:
            del self.head_memo[next(iter(self.head_memo))]
        return head

    def saved_head(self, key: str) -> Head | None:
        """The head named ``key`` from memory, else from ``out_dir/heads``, else None."""
        return self.head_memo.get(key) or self.load_head(key)

    def load_head(self, key: str) -> Head | None:
        path = self.out_dir / HEADS_DIR / f"{key}.npz"
        try:
            return load_head(str(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:  # torn or foreign file: train again
            warnings.warn(f"{path}: unreadable saved head ({exc}); training it again", stacklevel=2)
            return None

    def store_head(self, key: str, head: Head) -> None:
        started = time.perf_counter()
        folder = self.out_dir / HEADS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        _save_head(head, folder / f"{key}.npz")
        self.tick("io", started)

    def prune_heads(self) -> None:
        """Delete saved heads that the saved state can no longer start from."""
        state = self.state
        keep = {_rows_key(state["sets"][name]) for name in state["alive"]}
        if state.get("shared_head"):
            keep.add(state["shared_head"])
        folder = self.out_dir / HEADS_DIR
        for path in folder.glob("*.npz"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)

    def shared_init(self) -> Head | None:
        """The last shared head (the initial head before round 1), to start the next from."""
        key = self.state.get("shared_head")
        return self.saved_head(key) if key else None

    def accuracy(self, head: Head) -> float:
        started = time.perf_counter()
        value = evaluate(head, self.eval_X, self.eval_y).accuracy
        self.tick("evaluation", started)
        return value

    def head_for(self, name: str) -> Head:
        if name not in self.heads:
            self.heads[name] = self.train(self.state["sets"][name])
        return self.heads[name]

    # -- setup --

    def setup_eval(self) -> None:
        state = self.state
        if self.given_eval is not None:
            self.eval_X = np.asarray(self.given_eval.embeddings)
            self.eval_y = [str(label) for label in self.given_eval.labels]
            for uri in self.given_eval.uris:
                row = self.row_of.get(uri)
                if row is not None:
                    self.blocked_base[row] = True
            return
        if state["eval_rows"] is None:
            n = len(self.uris)
            size = self.held_out_size()
            rng = np.random.default_rng(_derive_seed(self.config.seed, "eval"))
            state["eval_rows"] = sorted(int(r) for r in rng.choice(n, size=size, replace=False))
            self.save()
        rows = state["eval_rows"]
        self.buy(rows, state["eval_labels"], "eval:after_oracle")
        self.eval_X = np.asarray(self.X[np.asarray(rows, dtype=np.int64)])
        self.eval_y = [state["eval_labels"][self.uris[r]] for r in rows]
        self.blocked_base[np.asarray(rows, dtype=np.int64)] = True

    def held_out_size(self) -> int:
        """How many pool items the eval set takes out of the race."""
        if self.given_eval is not None:
            return sum(uri in self.row_of for uri in self.given_eval.uris)
        frac = self.config.eval_frac or 0.0
        return max(1, round(frac * len(self.uris)))

    def check_sizes(self) -> None:
        """Fail before anything is bought when the pool cannot hold the eval and initial sets."""
        free = len(self.uris) - self.held_out_size()
        if free < self.config.initial:
            raise UsageError(
                f"the pool has {free} items outside the eval set, fewer than the initial "
                f"random set of {self.config.initial}",
                hint="lower --initial or --eval-frac, or use a larger pool",
            )

    def pretrain(self) -> None:
        """Round 0: the initial random set, its head and a_0 (every strategy starts there)."""
        state, config = self.state, self.config
        if not state["initial_rows"]:
            free = np.flatnonzero(~self.blocked_base)
            rng = np.random.default_rng(_derive_seed(config.seed, "initial"))
            state["initial_rows"] = sorted(
                int(r) for r in rng.choice(free, size=config.initial, replace=False)
            )
            self.save()
        initial = state["initial_rows"]
        self.buy(initial, state["labels"], "initial:after_oracle")
        head = self.train(initial)
        state["shared_head"] = _rows_key(initial)
        a0 = self.accuracy(head)
        bought = len(state["labels"])
        for name in config.strategies:
            state["sets"][name] = list(initial)
            state["history"][name] = [[len(initial), a0]]
            self.heads[name] = head
            state["rows"].append(asdict(RoundRow(0, name, len(initial), bought, a0, None, False)))
        state["shared"].append({"round": 0, "labels": bought, "accuracy": a0})
        state["best"].append(a0)
        state["round"] = 0
        self.save()
        _checkpoint("initial:after_round")
        self.report_progress(0, None, a0)

    # -- rounds --

    def stop_reason(self) -> str | None:
        state, config = self.state, self.config
        rnd = state["round"]
        last = [row["accuracy"] for row in state["rows"] if row["round"] == rnd]
        if state["shared"] and state["shared"][-1]["round"] == rnd:
            last.append(state["shared"][-1]["accuracy"])
        best = state["best"]
        if max(last) >= config.target_accuracy:
            return "target"
        if len(state["labels"]) >= config.budget:
            return "budget"
        k = config.plateau_rounds
        if len(best) > k and best[-1] - best[-1 - k] < config.plateau_delta:
            return "plateau"
        if len(state["labels"]) >= int((~self.blocked_base).sum()):
            return "pool_exhausted"
        if config.max_rounds is not None and rnd >= config.max_rounds:
            return "max_rounds"
        return None

    def blocked(self, name: str) -> NDArray[np.bool_]:
        mask = self.blocked_base.copy()
        mask[np.asarray(self.state["sets"][name], dtype=np.int64)] = True
        return mask

    def current(self) -> dict[str, float]:
        return {name: self.state["history"][name][-1][1] for name in self.state["alive"]}

    def quotas(self) -> dict[str, int]:
        state = self.state
        forecasts = {s: fc["value"] for s, fc in state["forecasts"].items()}
        ranked = rank_strategies(state["alive"], forecasts, self.current())
        return split_round(self.config.round_size, ranked, self.config.spend)

    def next_base_quota(self) -> int:
        """Picks every survivor gets next round, when this round eliminates one (if it can)."""
        if self.config.spend == "paper":
            return self.config.round_size
        return self.config.round_size // max(1, len(self.state["alive"]) - 1)

    def select(self, rnd: int, quotas: Mapping[str, int]) -> dict[str, list[int]]:
        """Every survivor's picks for this round, clamped to the budget left."""
        classes = self.classes()
        picks: dict[str, list[int]] = {}
        # Survivors share a head object until their sets differ (round 1: the initial head),
        # and the pool's probabilities under one head are computed once.
        probs_by_head: dict[int, NDArray[np.float32]] = {}
        for name in self.state["alive"]:
            needs = strategies.get(name).needs
            blocked = self.blocked(name)
            budget = min(quotas[name], int((~blocked).sum()))
            if budget <= 0:
                picks[name] = []
                continue
            probs = None
            if "probs" in needs:
                head = self.head_for(name)
                if id(head) not in probs_by_head:
                    started = time.perf_counter()
                    probs_by_head[id(head)] = _aligned(
                        head.predict_proba(self.X), head.classes, classes
                    )
                    self.tick("predict", started)
                probs = probs_by_head[id(head)]
            committee = self.committee(rnd, name, classes) if "committee" in needs else None
            started = time.perf_counter()
            chosen = strategies.run(
                name,
                budget=budget,
                probs=probs,
                committee=committee,
                embeddings=self.X,
                labeled=blocked,
                seed=_derive_seed(self.config.seed, rnd, name, "select"),
            )
            self.tick("selection", started)
            per_strategy = self.state["strategy_seconds"]
            per_strategy[name] = per_strategy.get(name, 0.0) + time.perf_counter() - started
            picks[name] = [int(r) for r in chosen]
        return self.clamp(picks)

    def committee(self, rnd: int, name: str, classes: NDArray[Any]) -> NDArray[np.float32]:
        """[K, n, C] pool probabilities of a bootstrap committee on ``name``'s set."""
        config = self.config
        started = time.perf_counter()
        rows = self.state["sets"][name]
        members = train_committee(
            self.X[np.asarray(rows, dtype=np.int64)],
            self.label_of(rows),
            k=config.committee_size,
            seed=_derive_seed(config.seed, rnd, name, "committee"),
            l2=config.l2,
            scaler=self.scaler,
            init=self.head_for(name),
        )
        self.tick("heads", started)
        started = time.perf_counter()
        probs = _aligned(members.proba(self.X), members.classes, classes)
        self.tick("predict", started)
        return probs

    def clamp(self, picks: dict[str, list[int]]) -> dict[str, list[int]]:
        bought = self.state["labels"]
        return clamp_picks(
            picks,
            already_bought={r for rows in picks.values() for r in rows if self.uris[r] in bought},
            budget_left=self.config.budget - len(bought),
        )

    def run_round(self, rnd: int) -> None:
        state, config = self.state, self.config
        pending = state["pending"]
        if pending is None or pending["round"] != rnd:
            quotas = self.quotas()
            pending = {"round": rnd, "picks": self.select(rnd, quotas), "quota": quotas}
            state["pending"] = pending
            self.save()
            _checkpoint(f"round{rnd}:after_select")
        picks: dict[str, list[int]] = pending["picks"]
        order: list[int] = []
        for name in state["alive"]:
            order.extend(picks[name])
        self.buy(list(dict.fromkeys(order)), state["labels"], f"round{rnd}:after_oracle")

        next_quota = self.next_base_quota()
        bought = len(state["labels"])
        new_rows: list[dict[str, Any]] = []
        forecasts: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(state["alive"]):
            previous = self.head_for(name)
            rows = state["sets"][name]
            have = set(rows)
            rows = rows + [r for r in picks[name] if r not in have]
            state["sets"][name] = rows
            self.heads[name] = self.train(rows, init=previous)
            acc = self.accuracy(self.heads[name])
            if i == 0:
                _checkpoint(f"round{rnd}:after_train")
            state["history"][name].append([len(rows), acc])
            started = time.perf_counter()
            hist = state["history"][name]
            horizon = len(rows) + next_quota
            fc = forecast([h[0] for h in hist], [h[1] for h in hist], horizon)
            self.tick("forecasts", started)
            forecasts[name] = asdict(fc)
            new_rows.append(
                asdict(RoundRow(rnd, name, len(rows), bought, acc, fc.value, False, horizon))
            )

        accuracies = [row["accuracy"] for row in new_rows]
        shared_acc: float | None = None
        if config.spend == "shared":
            all_rows = self.bought_rows()
            shared_acc = self.accuracy(self.train(all_rows, init=self.shared_init()))
            state["shared_head"] = _rows_key(all_rows)
            state["shared"].append({"round": rnd, "labels": bought, "accuracy": shared_acc})
            accuracies.append(shared_acc)
        state["rows"].extend(new_rows)
        state["curves"].update(forecasts)
        state["forecasts"] = forecasts
        state["best"].append(max(state["best"][-1], *accuracies))
        state["round"] = rnd
        state["pending"] = None
        # Elimination decides who races in the next round: none when there is no next round.
        eliminated = self.eliminate(new_rows) if self.stop_reason() is None else None
        self.save()
        self.prune_heads()
        _checkpoint(f"round{rnd}:after_round")
        self.report_progress(rnd, eliminated, shared_acc)

    def eliminate(self, new_rows: list[dict[str, Any]]) -> str | None:
        state = self.state
        if len(state["alive"]) < 2:
            return None
        forecasts = state["forecasts"]
        eliminated = choose_elimination(
            {s: forecasts[s]["value"] for s in state["alive"]}, self.current()
        )
        for row in new_rows:
            row["eliminated"] = row["strategy"] == eliminated
        state["alive"] = [s for s in state["alive"] if s != eliminated]
        del forecasts[eliminated]
        self.heads.pop(eliminated, None)
        return eliminated

    def report_progress(self, rnd: int, eliminated: str | None, shared_acc: float | None) -> None:
        if self.progress is None:
            return
        state = self.state
        rows = [RoundRow(**row) for row in state["rows"] if row["round"] == rnd]
        self.progress(
            RoundSummary(
                round=rnd,
                rows=rows,
                alive=list(state["alive"]),
                eliminated=eliminated,
                labels_bought=len(state["labels"]),
                best_accuracy=state["best"][-1],
                shared_accuracy=shared_acc,
            )
        )

    # -- finish --

    def winner(self) -> str:
        """Best current accuracy, then best forecast (none yet: the accuracy), then name."""
        current = self.current()
        forecasts = self.state["forecasts"]

        def rank(s: str) -> tuple[float, float, str]:
            ahead = forecasts[s]["value"] if s in forecasts else current[s]
            return (-current[s], -ahead, s)

        return min(current, key=rank)

    def finish(self, reason: str) -> Report:
        state, config = self.state, self.config
        if state["stop_reason"] is None:
            state["stop_reason"] = reason
            self.save()
        winner = self.winner()
        final_rows = self.bought_rows() if config.spend == "shared" else state["sets"][winner]
        head = self.train(final_rows)
        evaluation = evaluate(head, self.eval_X, self.eval_y)
        report = Report(
            rows=[RoundRow(**row) for row in state["rows"]],
            winner=winner,
            stop_reason=state["stop_reason"],
            final_accuracy=evaluation.accuracy,
            final_evaluation=evaluation.as_dict(),
            final_labels=len(final_rows),
            labels_bought=len(state["labels"]),
            eval_labels=len(state["eval_labels"]),
            spend=config.spend,
            rounds=state["round"],
            config=config.as_dict(),
            shared_accuracy=list(state["shared"]),
            curves=dict(state["curves"]),
            timings=_with_overhead(state["timings"]),
            strategy_seconds=dict(state["strategy_seconds"]),
            out_dir=str(self.out_dir),
            final_head=head,
        )
        _checkpoint("final:before_outputs")
        self.write_outputs(report, final_rows)
        return report

    def write_outputs(self, report: Report, final_rows: list[int]) -> None:
        out = self.out_dir
        labeled = {self.uris[r]: self.state["labels"][self.uris[r]] for r in final_rows}
        write_atomic(out / "labeled.csv", format_labels_csv(labeled))
        if self.state["eval_labels"]:
            write_atomic(out / "eval.csv", format_labels_csv(self.state["eval_labels"]))
        write_atomic(out / "rounds.csv", _rounds_csv(report.rows))
        write_atomic(out / "report.json", json.dumps(report.as_dict(), indent=2) + "\n")
        if report.final_head is not None:
            _save_head(report.final_head, out / "head.npz")
        plot_curves(report, out / "curves.png")


def _aligned(
    probs: NDArray[np.float32], own: NDArray[Any], classes: NDArray[Any]
) -> NDArray[np.float32]:
    """The last axis of ``probs`` (over ``own`` classes) spread over ``classes``; others get 0.

    Strategies then always see every class labeled so far, so a head that has seen one class
    still yields a probability matrix that margin or entropy can rank.
    """
    if len(own) == len(classes):
        return probs
    out = np.zeros((*probs.shape[:-1], len(classes)), dtype=np.float32)
    out[..., np.searchsorted(classes, own)] = probs
    return out


def _with_overhead(timings: Mapping[str, float]) -> dict[str, float]:
    """Seconds by part, plus ``overhead``: everything but waiting for the oracle."""
    out = dict(timings)
    out["overhead"] = sum(v for k, v in timings.items() if k != "oracle")
    return out


def _rounds_csv(rows: Sequence[RoundRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [f.name for f in fields(RoundRow)]
    writer.writerow(names)
    for row in rows:
        values = asdict(row)
        writer.writerow(["" if values[k] is None else values[k] for k in names])
    return buffer.getvalue()


def plot_curves(report: Report, path: Path) -> bool:
    """Accuracy vs labels per strategy, fitted curves dashed, forecasts as hollow markers.

    matplotlib is optional: without it the PNG is skipped with a warning (returns False).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed; skipped curves.png", stacklevel=2)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    by_name: dict[str, list[RoundRow]] = {}
    for row in report.rows:
        by_name.setdefault(row.strategy, []).append(row)
    for name, rows in by_name.items():
        n = np.array([r.labels for r in rows], dtype=np.float64)
        acc = np.array([r.accuracy for r in rows])
        (line,) = ax.plot(n, acc, marker="o", markersize=3, label=name)
        color = line.get_color()
        params = report.curves.get(name, {})
        if params.get("method") == "curve":
            fc = Forecast(**params)
            ahead = max((r.forecast_at or 0) for r in rows)
            grid = np.linspace(n.min(), max(n.max(), ahead), 100)
            values = fc.curve(grid)
            if values is not None:
                ax.plot(grid, values, linestyle="--", color=color, linewidth=1)
        for r in rows:
            if r.forecast is not None and r.forecast_at is not None:
                ax.plot(r.forecast_at, r.forecast, marker="o", fillstyle="none", color=color)
    if report.shared_accuracy and report.spend == "shared":
        ax.plot(
            [s["labels"] for s in report.shared_accuracy],
            [s["accuracy"] for s in report.shared_accuracy],
            color="black",
            linewidth=2,
            label="all labels (shared)",
        )
    target = report.config.get("target_accuracy")
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("labels in the strategy's set (black: all labels bought)")
    ax.set_ylabel("eval accuracy")
    ax.set_title(f"PSHEA ({report.spend}): winner {report.winner}, stop: {report.stop_reason}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def run_auto(
    uris: Sequence[str],
    embeddings: NDArray[Any],
    oracle: Oracle,
    config: AutoConfig,
    *,
    out_dir: str | os.PathLike[str],
    eval_set: EvalSet | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> Report:
    """Run PSHEA over a pool's cached embeddings and return its report (see module docstring).

    ``out_dir`` holds the state and the outputs (labeled.csv, rounds.csv, report.json,
    curves.png, head.npz). With ``resume`` the saved run there continues: the config must be
    the one it started with (``saved_config``) and the pool the same. Without it, a folder that
    already holds a run is an error, so a typo cannot silently restart a paid-for run.
    Raises ``OracleError`` (state saved) and lets ``PendingLabels`` through (state saved).
    """
    X = np.asarray(embeddings) if not isinstance(embeddings, np.ndarray) else embeddings
    if X.ndim != 2 or X.shape[0] != len(uris):
        raise UsageError(f"embeddings have shape {X.shape} but the pool has {len(uris)} items")
    config = config.checked()
    if eval_set is not None and config.eval_frac is not None:
        raise UsageError("give an eval set or an eval fraction, not both")
    if eval_set is None and config.eval_frac is None:
        raise UsageError("no evaluation set", hint="give --eval FILE (labeled) or --eval-frac F")
    if eval_set is not None and eval_set.embeddings.shape[1] != X.shape[1]:
        raise UsageError("eval embeddings and pool embeddings differ in dimension")
    out = Path(out_dir)
    agent = _Agent(uris, X, oracle, config, out, eval_set, progress)
    digest = _pool_digest(agent.uris, X)
    if resume:
        state = _read_state(out)
        saved, wanted = state["config"], config.as_dict()
        if saved != wanted:
            changed = sorted(k for k in saved if saved.get(k) != wanted.get(k))
            raise UsageError(
                f"{out} holds a run with different settings ({', '.join(changed)})",
                hint="resume with the saved settings (alcli auto --resume DIR alone)",
            )
        if state["pool_digest"] != digest:
            raise UsageError(
                f"{out} holds a run over a different pool or embeddings",
                hint="resume with the same pool and model",
            )
        agent.state = state
    else:
        if (out / STATE_FILE).exists():
            raise UsageError(
                f"{out} already holds an alcli auto run",
                hint="pass --resume to continue it, or choose another --out folder",
            )
        agent.check_sizes()
        agent.fresh_state(digest)
        agent.save()

    agent.setup_eval()
    if agent.state["round"] < 0:
        agent.pretrain()
    while True:
        reason = agent.state["stop_reason"] or agent.stop_reason()
        if reason is not None:
            return agent.finish(reason)
        agent.run_round(agent.state["round"] + 1)
