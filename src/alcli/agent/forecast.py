"""The learning-curve forecaster: a strategy's accuracy one round ahead.

Fitted with ``scipy.optimize.curve_fit``, bounded (0 ≤ α ≤ 1, β ≥ 0, γ > 0; internally on n
rescaled to [0, 1], see ``_fit_curve``), from three distinct points on. With one point the
forecast is that accuracy; with two (or when a fit fails) it is the straight line through the
last two points, clipped to [0, 1]. Where the forecast aims (the horizon) is the race's
choice (``alcli.agent.race``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import OptimizeWarning, curve_fit


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
