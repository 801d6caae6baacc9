"""Search-quality metrics on a run's curve: cost to settle, first hit, final gap, log-gap area.

A run's curve is ``[[cumulative_cost, true_objective], ...]``: after each trial, the noise-free
target objective of the strategy's *current* recommendation. What a user pays for is a
recommendation that is right and *stays* right, so the headline is the **cost to settle**:
the cost after which the recommendation stays within a band of the optimum until the budget
ends. The first hit (the first time the band is entered) is kept beside it because the gap
between the two shows a search that finds and then loses the optimum.

Gaps are relative, ``objective / optimum - 1``. Before a strategy's first recommendation its
user holds the uniform (or natural) mixture, so the log-gap area charges the ``uniform_gap``
there; a strategy that never recommends anything better scores exactly the ``uniform`` line.

Medians over seeds come with bootstrap 90% intervals (seeds resampled with replacement);
speed-up ratios resample both strategies' seeds independently. ``inf`` (never settled) is a
valid value everywhere: a median is ``inf`` when at least half the runs never settled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "GAP_FLOOR",
    "relative_gap",
    "cost_to_first_hit",
    "cost_to_settle",
    "final_gap",
    "mean_log_gap",
    "gap_at",
    "largest_rise",
    "interval_coverage",
    "bootstrap_median",
    "bootstrap_ratio",
]

#: Gaps are floored here before taking logs: a pool's best candidate has gap 0 exactly, and
#: 1e-5 (0.001%) is below any difference a training run can resolve.
GAP_FLOOR = 1e-5

Curve = Sequence[Sequence[float]]


def relative_gap(value: float, optimum: float) -> float:
    """``value / optimum - 1`` measured against ``|optimum|`` (works for negative objectives)."""
    return (value - optimum) / abs(optimum)


def _inside(value: float, optimum: float, band: float) -> bool:
    return value <= optimum + band * abs(optimum)


def cost_to_first_hit(curve: Curve, optimum: float | None, band: float) -> float:
    """First cumulative cost at which the recommendation is within ``band`` (relative) of the
    optimum; ``inf`` if never."""
    if optimum is None:
        return math.inf
    for c, v in curve:
        if _inside(v, optimum, band):
            return float(c)
    return math.inf


def cost_to_settle(curve: Curve, optimum: float | None, band: float) -> float:
    """Cumulative cost after which the recommendation stays within ``band`` of the optimum
    until the run ends; ``inf`` if the last recommendation is outside it.

    The curve's last point holds until the budget ends (a strategy that stops proposing
    keeps its recommendation), so a run settles exactly when its final stretch of points is
    inside the band; the settle cost is where that stretch begins.
    """
    if optimum is None or not curve:
        return math.inf
    settle = math.inf
    for c, v in reversed(curve):
        if not _inside(v, optimum, band):
            break
        settle = float(c)
    return settle


def final_gap(curve: Curve, optimum: float | None) -> float:
    """Relative gap of the recommendation held when the budget ends (``inf``: none)."""
    if optimum is None or not curve:
        return math.inf
    return relative_gap(curve[-1][1], optimum)


def gap_at(curve: Curve, optimum: float, cost: float, before: float) -> float:
    """Relative gap of the recommendation held at cumulative ``cost`` (``before`` until the
    first point)."""
    held = before
    for c, v in curve:
        if c > cost:
            break
        held = relative_gap(v, optimum)
    return held


def largest_rise(curve: Curve, optimum: float | None, band: float = 0.01) -> float:
    """After the recommendation first comes within ``band``, the largest amount its gap
    rises above the best gap held so far (relative, like the gaps): 0 for a search that
    never loses ground once it is close, large for one that finds the optimum and leaves
    it. ``nan`` when the band is never entered."""
    if optimum is None:
        return math.nan
    best = math.inf
    rise = math.nan
    for _, v in curve:
        gap = relative_gap(v, optimum)
        if math.isnan(rise):
            if gap > band:
                continue
            rise = 0.0
        best = min(best, gap)
        rise = max(rise, gap - best)
    return rise


def interval_coverage(points: Sequence[tuple[float, float, float]]) -> tuple[int, int]:
    """``(inside, total)`` over ``(lower, upper, truth)`` triples: how often a recommendation's
    credible interval held the true objective of the mixture it recommended."""
    inside = sum(1 for lo, hi, t in points if lo <= t <= hi)
    return inside, len(points)


def mean_log_gap(curve: Curve, optimum: float | None, start: float, budget: float,
                 before: float) -> float:
    """Area under ``log10(gap)`` vs ``log10(cost)`` from ``start`` to ``budget``, divided by
    the width of that range: the gap's geometric mean over log-spaced cost, one number that
    rewards being close early *and* staying close. ``before`` is the gap held until the
    first recommendation (the uniform mixture's); gaps are floored at :data:`GAP_FLOOR`.
    """
    if optimum is None or not (0 < start < budget):
        return math.nan
    lo, hi = math.log10(start), math.log10(budget)
    # Breakpoints of the step function inside (start, budget).
    edges = [lo] + [math.log10(c) for c, _ in curve if start < c < budget] + [hi]
    area = 0.0
    for a, b in zip(edges, edges[1:], strict=False):
        g = gap_at(curve, optimum, 10 ** a * (1 + 1e-12), before)
        area += (b - a) * math.log10(max(g, GAP_FLOOR))
    return area / (hi - lo)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    finite_or_inf = samples[~np.isnan(samples)]
    if finite_or_inf.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    # "nearest" never interpolates between a finite value and inf (which gives nan).
    lo, hi = np.percentile(finite_or_inf, [tail, 100.0 - tail], method="nearest")
    return float(lo), float(hi)


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    # A median of an even count averages the middle pair; with inf in it that is inf,
    # which is the honest answer ("half the runs never got there").
    with np.errstate(invalid="ignore"):
        return np.median(x, axis=axis)


def bootstrap_median(values: Sequence[float], level: float = 0.9, n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(median, lo, hi)``: the median over seeds and its bootstrap ``level`` interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boots = _median(x[rng.integers(0, x.size, size=(n_boot, x.size))])
    lo, hi = _percentiles(boots, level)
    return float(_median(x)), lo, hi


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where never (inf) on both sides is undefined (nan), only the
    denominator never is 0, only the numerator never is inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    both = np.isinf(num) & np.isinf(den)
    out[both] = np.nan
    out[np.isinf(den) & ~np.isinf(num)] = 0.0
    out[np.isinf(num) & ~np.isinf(den)] = np.inf
    return out


def bootstrap_ratio(numerator: Sequence[float], denominator: Sequence[float],
                    level: float = 0.9, n_boot: int = 2000, seed: int = 0,
                    stat: Callable[[np.ndarray], np.ndarray] = _median
                    ) -> tuple[float, float, float]:
    """``(ratio, lo, hi)`` of the medians ``median(numerator) / median(denominator)``, with a
    bootstrap interval resampling each side's seeds independently. A speed-up of strategy B
    over A is ``bootstrap_ratio(cost_A, cost_B)``: above 1, B is cheaper."""
    a = np.asarray(numerator, dtype=np.float64)
    b = np.asarray(denominator, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ma = stat(a[rng.integers(0, a.size, size=(n_boot, a.size))])
    mb = stat(b[rng.integers(0, b.size, size=(n_boot, b.size))])
    lo, hi = _percentiles(_ratio(ma, mb), level)
    point = _ratio(np.array([stat(a)]), np.array([stat(b)]))[0]
    return float(point), lo, hi
