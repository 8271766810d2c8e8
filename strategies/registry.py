"""The strategy registry: names, metadata, plugins, and the one entry point that runs them.

Strategies register timm-style with :func:`register`; third-party ones arrive through the
``alcli.strategies`` entry-point group and are imported lazily, only when a name is not built
in (or when :func:`available` lists everything), so a broken plugin costs nothing until asked
for and never hides the built-ins. ``run`` validates inputs once, checks the strategy's
declared needs (with advice on what could run instead), calls it, and checks what it returned,
so every strategy, built-in or not, honours the same contract.

The ``labeled`` need does not ask the caller for labels: probabilities or a committee passed
in come from the caller's own model, trained on the caller's labels (as modAL and
scikit-activeml take them). It says the strategy's inputs come from a trained model, so a
caller that trains that model itself (``alcli select`` without ``--probs``, the agent) needs
at least one labeled item; ``cold_start`` strategies need no model at all.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from alcli.errors import RunError, StrategyError

from . import combine
from ._scaling import Scaling, scaling_of
from ._select import (
    NEEDS,
    FloatArray,
    Picks,
    SelectionContext,
    as_float_array,
    as_generator,
    check_budget,
    check_finite,
    check_probabilities,
    labeled_mask,
    no_scores,
    pool_size,
)

ENTRY_POINT_GROUP = "alcli.strategies"

#: The order families are listed in; plugin families follow alphabetically.
FAMILY_ORDER = ("baselines", "uncertainty", "disagreement", "diversity", "hybrid")

StrategyFn = Callable[[SelectionContext], "Picks | npt.NDArray[np.integer[Any]]"]
F = TypeVar("F", bound=StrategyFn)


class PluginWarning(UserWarning):
    """A third-party strategy plugin could not be loaded; the others still work."""


@dataclass(frozen=True, slots=True)
class StrategyInfo:
    """Everything the CLI, the agent and error messages need to know about a strategy.

    ``needs`` ⊆ {"probs", "committee", "embeddings", "labeled"} (``labeled``: the inputs
    come from a model trained on labels, see the module docstring); ``cost`` is big-O in n,
    d, C, K, b; ``cold_start`` says it is usable with no labels and no model; ``origin`` is
    "alcli" or the distribution a plugin came from; ``fn`` maps a SelectionContext to picks.
    """

    name: str
    family: str
    needs: frozenset[str]
    cost: str
    reference: str
    summary: str
    fn: StrategyFn = field(repr=False, compare=False)
    aliases: tuple[str, ...] = ()
    cold_start: bool = True
    origin: str = "alcli"

    @property
    def scaling(self) -> Scaling:
        """Time and memory in n, d, b, and how it runs on a pool streamed out of core."""
        return scaling_of(self.name, self.needs)


def normalize_name(name: str) -> str:
    """``Least-Confidence`` and ``least_confidence`` name the same strategy."""
    return name.strip().lower().replace("-", "_")


class Registry:
    """Strategies by name and alias, plus the state of plugin loading."""

    def __init__(self) -> None:
        self._infos: dict[str, StrategyInfo] = {}
        self._aliases: dict[str, str] = {}
        self._plugins_loaded = False
        self._plugin_failures: dict[str, str] = {}
        self._loading_origin: str | None = None
        self._combinations: dict[str, StrategyInfo] = {}

    def copy_builtins(self) -> Registry:
        """A registry with this one's non-plugin strategies and no plugins loaded (tests)."""
        clone = Registry()
        for info in self._infos.values():
            if info.origin == "alcli":
                clone.add(info)
        return clone

    def add(self, info: StrategyInfo) -> None:
        for key in (info.name, *info.aliases):
            if key in self._infos or key in self._aliases:
                owner = self._aliases.get(key, key)
                raise StrategyError(
                    f"strategy name {key!r} is already registered by "
                    f"{self._infos[owner].origin} ({owner})",
                    hint="register the strategy under another name",
                )
        self._infos[info.name] = info
        for alias in info.aliases:
            self._aliases[alias] = info.name

    @property
    def loading_origin(self) -> str:
        """Who registers now: the plugin distribution being loaded, else "alcli"."""
        return self._loading_origin or "alcli"

    def lookup(self, name: str) -> StrategyInfo | None:
        key = normalize_name(name)
        return self._infos.get(self._aliases.get(key, key))

    def get(self, name: str) -> StrategyInfo:
        info = self.lookup(name)
        if info is None and combine.is_combination(name):
            return self._combination(name)
        if info is None:
            self.load_plugins()
            info = self.lookup(name)
        if info is None:
            raise self._unknown(name)
        return info

    def _combination(self, spec: str) -> StrategyInfo:
        """A weighted combination (``margin:0.7+typiclust:0.3``) as a strategy of its own."""
        key = spec.replace(" ", "").lower()
        if key in self._combinations:
            return self._combinations[key]
        components = combine.parse(spec, lambda part: self.get(part).name)
        parts = [self.get(c.name) for c in components]
        if len(parts) == 1:
            info = parts[0]
        else:
            info = StrategyInfo(
                name=combine.canonical_name(components),
                family="combination",
                needs=frozenset().union(*(p.needs for p in parts)),
                cost=" + ".join(p.cost for p in parts),
                reference="weighted Borda count of the components' ranks (Dwork et al., "
                "WWW 2001); Lightly's weighted selection strategies",
                summary="weighted rank combination of " + ", ".join(p.name for p in parts),
                fn=combine.combined(components, run_with_scores),
                cold_start=all(p.cold_start for p in parts),
            )
        self._combinations[key] = info
        self._combinations[info.name] = info
        return info

    def available(self, pattern: str | None = None) -> list[StrategyInfo]:
        self.load_plugins()
        infos = list(self._infos.values())
        if pattern is not None:
            pat = normalize_name(pattern)
            infos = [
                info
                for info in infos
                if any(fnmatch.fnmatchcase(key, pat) for key in (info.name, *info.aliases))
                or fnmatch.fnmatchcase(info.family, pat)
            ]
        return sorted(infos, key=_listing_order)

    def load_plugins(self) -> None:
        """Import every ``alcli.strategies`` entry point once; warn and skip broken ones."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry.dist.name if entry.dist is not None else "an unknown distribution"
            self._loading_origin = dist
            reason = None
            try:
                entry.load()
            except Exception as exc:
                reason = (
                    f"strategy plugin {entry.name!r} from distribution {dist!r} failed to load "
                    f"({type(exc).__name__}: {exc}); skipped it — fix or uninstall {dist}"
                )
            finally:
                self._loading_origin = None
            if reason is None and self.lookup(entry.name) is None:
                reason = (
                    f"strategy plugin {entry.name!r} from distribution {dist!r} loaded "
                    f"{entry.value!r} but registered no strategy named {entry.name!r}"
                )
            if reason is not None:
                self._plugin_failures[normalize_name(entry.name)] = reason
                warnings.warn(reason, PluginWarning, stacklevel=3)

    def _unknown(self, name: str) -> StrategyError:
        key = normalize_name(name)
        if key in self._plugin_failures:
            return StrategyError(self._plugin_failures[key])
        known = sorted([*self._infos, *self._aliases])
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = (
            f"did you mean {' or '.join(repr(c) for c in close)}?"
            if close
            else "run `alcli strategies` to list them"
        )
        if self._plugin_failures:
            hint += f"; {len(self._plugin_failures)} strategy plugin(s) failed to load: " + (
                ", ".join(sorted(self._plugin_failures))
            )
        return StrategyError(f"unknown strategy {name!r}", hint=hint)

    def runnable_with(self, given: set[str]) -> list[str]:
        """Names whose array needs are met by ``given`` (the names of the arrays passed)."""
        return [
            info.name
            for info in sorted(self._infos.values(), key=_listing_order)
            if info.needs - {"labeled"} <= given
        ]


def _listing_order(info: StrategyInfo) -> tuple[int, str, str]:
    family_rank = (
        FAMILY_ORDER.index(info.family) if info.family in FAMILY_ORDER else len(FAMILY_ORDER)
    )
    return (family_rank, info.family, info.name)


_REGISTRY = Registry()


def register(
    name: str,
    *,
    family: str,
    needs: Iterable[str],
    cost: str,
    reference: str,
    summary: str | None = None,
    aliases: Iterable[str] = (),
    cold_start: bool | None = None,
) -> Callable[[F], F]:
    """Decorator adding a strategy function to the zoo.

    The function takes a :class:`SelectionContext` and returns pool indices in pick order,
    or ``Picks(indices, scores)``. ``needs`` is a subset of ``{"probs", "committee",
    "embeddings", "labeled"}``; ``cold_start`` defaults to "does not need labeled". ``cost``
    is a big-O string in n, d, C, K, b; ``summary`` defaults to the docstring's first line.
    """
    registry = _REGISTRY
    needs_set = frozenset(needs)
    unknown = needs_set - NEEDS
    if unknown:
        raise StrategyError(
            f"strategy {name!r} declares unknown needs {sorted(unknown)}",
            hint=f"needs must be drawn from {sorted(NEEDS)}",
        )

    def decorate(fn: F) -> F:
        doc = (fn.__doc__ or "").strip()
        info = StrategyInfo(
            name=normalize_name(name),
            family=family,
            needs=needs_set,
            cost=cost,
            reference=reference,
            summary=summary if summary is not None else doc.split("\n", 1)[0],
            aliases=tuple(normalize_name(a) for a in aliases),
            cold_start=("labeled" not in needs_set) if cold_start is None else cold_start,
            origin=registry.loading_origin,
            fn=fn,
        )
        registry.add(info)
        return fn

    return decorate


def get(name: str) -> StrategyInfo:
    """The strategy called ``name`` (or an alias); StrategyError with suggestions if none."""
    return _REGISTRY.get(name)


def available(pattern: str | None = None) -> list[StrategyInfo]:
    """Registered strategies (plugins included), by family then name.

    ``pattern`` is an fnmatch pattern matched against names, aliases and the family, so
    ``"*margin*"`` and ``"uncertainty"`` both work.
    """
    return _REGISTRY.available(pattern)


def run(
    name: str,
    *,
    budget: int,
    probs: npt.ArrayLike | None = None,
    committee: npt.ArrayLike | None = None,
    embeddings: npt.ArrayLike | None = None,
    labeled: npt.ArrayLike | None = None,
    seed: int | np.random.Generator = 0,
) -> npt.NDArray[np.int64]:
    """Pick up to ``budget`` unlabeled pool items with strategy ``name``.

    Returns int64 pool indices in pick order: unique, none labeled, ``min(budget, unlabeled
    count)`` long. ``probs`` is n x C, ``committee`` K x n x C, ``embeddings`` n x d;
    ``labeled`` is a boolean mask of length n or an array of indices. ``seed`` is an int or
    a ``numpy.random.Generator``; the same inputs and seed give the same picks.
    """
    return run_with_scores(
        name,
        budget=budget,
        probs=probs,
        committee=committee,
        embeddings=embeddings,
        labeled=labeled,
        seed=seed,
    ).indices


def run_with_scores(
    name: str,
    *,
    budget: int,
    probs: npt.ArrayLike | None = None,
    committee: npt.ArrayLike | None = None,
    embeddings: npt.ArrayLike | None = None,
    labeled: npt.ArrayLike | None = None,
    seed: int | np.random.Generator = 0,
) -> Picks:
    """Like :func:`run`, but also each pick's score (float64, NaN where the strategy has none).

    The score is the quantity the strategy ranked by when it made the pick (margin, entropy,
    distance to the nearest centre, ...); see each strategy's docstring.
    """
    info = get(name)
    requested = check_budget(budget)
    arrays: dict[str, FloatArray] = {}
    for key, value, ndim in (
        ("probs", probs, 2),
        ("committee", committee, 3),
        ("embeddings", embeddings, 2),
    ):
        if value is not None:
            arrays[key] = as_float_array(value, key, ndim)
    n = pool_size(arrays, labeled)
    mask = labeled_mask(labeled, n)
    check_needs(info.name, arrays)
    needed = {key: array for key, array in arrays.items() if key in info.needs}
    for key, array in needed.items():
        check_finite(array, key)
        if key in ("probs", "committee"):
            check_probabilities(array, key)
    unlabeled = np.flatnonzero(~mask).astype(np.int64)
    clipped = min(requested, int(unlabeled.size))
    if clipped == 0:
        return no_scores(np.empty(0, dtype=np.int64))
    ctx = SelectionContext(
        budget=clipped,
        n=n,
        labeled=mask,
        unlabeled=unlabeled,
        rng=as_generator(seed),
        probs=needed.get("probs"),
        committee=needed.get("committee"),
        embeddings=needed.get("embeddings"),
    )
    return _checked_output(info, ctx, info.fn(ctx))


def check_needs(name: str, given: Iterable[str]) -> StrategyInfo:
    """The strategy ``name``, if the arrays named in ``given`` are all it reads; else why not.

    Needs no arrays, so a caller can check a request before computing them (``alcli select``
    checks before embedding a pool). ``given`` holds names among "probs", "committee" and
    "embeddings"; a ``StrategyError`` says what is missing and what could run instead.
    """
    info = get(name)
    have = set(given) - {"labeled"}
    missing = sorted((info.needs - have) - {"labeled"})
    if missing:
        what = " and ".join(missing)
        instead = [n for n in _REGISTRY.runnable_with(have) if n != info.name]
        hint = (
            f"with what you passed you can run: {', '.join(instead)}" if instead else f"pass {what}"
        )
        raise StrategyError(f"{info.name} needs {what}, which was not given", hint=hint)
    return info


def _checked_output(
    info: StrategyInfo, ctx: SelectionContext, output: Picks | npt.NDArray[np.integer[Any]]
) -> Picks:
    """Hold every strategy, plugins included, to the documented output contract."""
    picks = output if isinstance(output, Picks) else no_scores(np.asarray(output))
    indices = np.asarray(picks.indices)
    scores = np.asarray(picks.scores, dtype=np.float64)
    problem = None
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        problem = f"returned indices of dtype {indices.dtype} and shape {indices.shape}"
    elif indices.size != ctx.budget:
        problem = f"returned {indices.size} picks instead of {ctx.budget}"
    elif scores.shape != indices.shape:
        problem = f"returned {scores.size} scores for {indices.size} picks"
    elif indices.min() < 0 or indices.max() >= ctx.n:
        problem = "returned indices outside the pool"
    elif np.unique(indices).size != indices.size:
        problem = "returned the same item twice"
    elif ctx.labeled[indices].any():
        problem = "returned an already labeled item"
    if problem is not None:
        raise RunError(
            f"strategy {info.name} ({info.origin}) {problem}",
            hint="this is a bug in the strategy; report it to its authors",
        )
    return Picks(indices.astype(np.int64, copy=False), scores)
