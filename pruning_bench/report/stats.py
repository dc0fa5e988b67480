"""Statistics for reports: per-cell summaries over seeds and which cells tie with the best.

A cell is one (row, target sparsity) group of finished trials, one value per seed. Its summary is the
mean, the sample standard deviation (ddof=1), n, and a 95% Student-t confidence interval of the mean.
"Statistically indistinguishable from the best" is decided by Welch's unequal-variance two-sided
t-test against the best cell of the column at alpha = 0.05, with no correction for multiple comparisons
(see :data:`TEST_DESCRIPTION`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
TEST_DESCRIPTION = (
    "Welch's two-sided t-test (unequal variances) of each cell against the best cell of its column, "
    f"alpha = {ALPHA:g}, no multiple-comparison correction: cells with p >= {ALPHA:g} are marked as "
    "indistinguishable from the best. Cells with a single seed cannot be tested and are never marked tied."
)

# Metrics where a smaller value is better (perplexity too); everything else (accuracies) is higher-is-better.
_LOWER_IS_BETTER = ("loss", "_ms", "seconds", "flops", "memory", "params", "ppl")


def higher_is_better(metric: str) -> bool:
    return not any(metric.endswith(s) or s in metric for s in _LOWER_IS_BETTER)


@dataclass(frozen=True)
class Summary:
    """Mean, sample std, n and 95% t confidence interval of one cell's values (NaN where undefined)."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float


def summarize(values: Sequence[float]) -> Summary:
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, math.nan, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value; NaN when either side has fewer than two values.

    Two samples without any spread are equal (p = 1) when their means are equal, else different (p = 0).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan
    if x.std(ddof=1) == 0 and y.std(ddof=1) == 0:
        return 1.0 if x.mean() == y.mean() else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


@dataclass(frozen=True)
class Difference:
    """``a - b`` of two cells' means, its Welch 95% confidence interval and two-sided p."""

    diff: float
    low: float
    high: float
    p: float


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Difference of means with a Welch-Satterthwaite 95% interval (NaN bounds with fewer than two values
    on a side, or no spread at all)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(x.mean() - y.mean()) if x.size and y.size else math.nan
    if x.size < 2 or y.size < 2:
        return Difference(diff, math.nan, math.nan, math.nan)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return Difference(diff, diff, diff, welch_p(x, y))
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return Difference(diff, diff - half, diff + half, welch_p(x, y))


def resolvable_difference(sd: float, n: int) -> float:
    """The smallest difference of two means, each over ``n`` seeds with spread ``sd``, that Welch's test
    calls significant (two-sided, ALPHA): t(1 - ALPHA/2, 2n - 2) x sd x sqrt(2 / n). NaN for n < 2."""
    if n < 2 or not sd >= 0:
        return math.nan
    return float(stats.t.ppf(1 - ALPHA / 2, 2 * n - 2)) * sd * math.sqrt(2.0 / n)


def seeds_to_resolve(difference: float, sd: float, most: int = 1000) -> int | None:
    """The fewest seeds per row at which ``difference`` is resolvable (None beyond ``most``)."""
    if not sd > 0:
        return 2 if sd == 0 else None
    n = 2
    while resolvable_difference(sd, n) > difference:
        n += 1
        if n > most:
            return None
    return n


@dataclass(frozen=True)
class Ranking:
    """Per cell of one column: whether it is the best, tied with the best, and the p-value against it."""

    best: dict[str, bool]
    tied: dict[str, bool]
    p_vs_best: dict[str, float]


def rank_column(cells: dict[str, Sequence[float]], *, higher: bool = True) -> Ranking:
    """Mark the best cell(s) by mean and the cells indistinguishable from a best one (Welch p >= ALPHA)."""
    means = {k: float(np.mean(v)) for k, v in cells.items() if len(v)}
    if not means:
        return Ranking({}, {}, {})
    top = max(means.values()) if higher else min(means.values())
    best = {k: m == top for k, m in means.items()}
    leaders = [k for k, b in best.items() if b]
    tied: dict[str, bool] = {}
    p_vs_best: dict[str, float] = {}
    for k in means:
        if best[k]:
            tied[k], p_vs_best[k] = False, math.nan
            continue
        ps = [welch_p(cells[k], cells[lead]) for lead in leaders]
        p = max((q for q in ps if not math.isnan(q)), default=math.nan)
        p_vs_best[k] = p
        tied[k] = not math.isnan(p) and p >= ALPHA
    return Ranking(best, tied, p_vs_best)


def si_split(value: float) -> tuple[float, str]:
    """``value`` scaled to its SI prefix: 2.5e9 -> (2.5, "G")."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return value / factor, prefix
    return value, ""


def ceil_2sig(x: float) -> str:
    """``x`` rounded *up* to two significant digits (a budget multiple that surely suffices); '?' if not > 0."""
    if not x > 0 or math.isinf(x):
        return "?"
    digits = 1 - math.floor(math.log10(x))
    return f"{math.ceil(x * 10 ** digits - 1e-9) / 10 ** digits:g}"
