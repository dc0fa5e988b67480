"""Report stage 2b, findings: what a reader should take from each leaderboard column, in sentences
computed from the cells (:mod:`pruning_bench.report.cells`), so a report opens with its conclusions.

Per budget level and target sparsity: the best row and the rows statistically tied with it; the rows
that do not beat the random-pruning baseline; the comparisons the suite names (``[report] compare``,
SWAMP vs IMP by default) with the difference, its Welch 95% interval and p; each control against its
source (``imp`` − ``reinit [source=imp]``); and the column's resolution:
the smallest difference its test could call significant with the seeds it has and the spread measured
on it, and how many seeds would resolve one point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from pruning_bench.report.cells import RANDOM_BASELINE, level_cells, levels, scale_of
from pruning_bench.report.stats import (
    ALPHA,
    higher_is_better,
    resolvable_difference,
    seeds_to_resolve,
    welch_difference,
)

DEFAULT_COMPARE = (("swamp", "imp"),)
RESOLUTION_GOAL = 1.0  # points of accuracy: the difference the default suite is sized to resolve


@dataclass
class Finding:
    """The findings of one leaderboard column."""

    level: tuple[str, str, str]
    target: float
    lines: list[str] = field(default_factory=list)


def findings(cells: pd.DataFrame, metric: str,
             compare: Sequence[Sequence[str]] = DEFAULT_COMPARE) -> list[Finding]:
    """One :class:`Finding` per budget level and target sparsity > 0 with at least one finished cell."""
    scale, _ = scale_of(metric)
    unit = " points" if scale == 100 else ""
    out = []
    for level in levels(cells):
        here = level_cells(cells, level)
        for target in sorted(t for t in here["target_sparsity"].unique() if t > 0):
            column = here[(here["target_sparsity"] == target) & (here["n"] > 0)]
            if column.empty:
                continue
            finding = Finding(level, target)
            finding.lines += _leaders(column, scale, higher_is_better(metric))
            finding.lines += _versus_random(column, scale, unit)
            finding.lines += _versus_source(column, scale, unit)
            finding.lines += [_comparison(column, a, b, scale, unit) for a, b in compare
                              if _row(column, a) is not None and _row(column, b) is not None]
            finding.lines.append(_resolution(column, scale, unit))
            out.append(finding)
    return out


def _fmt(rec: pd.Series, scale: float) -> str:
    spread = f" ± {rec['std'] * scale:.2f}" if rec["n"] > 1 else ""
    n = int(rec["n"])
    return f"{rec['method']} {rec['mean'] * scale:.2f}{spread} ({n} seed{'s' if n != 1 else ''})"


def _leaders(column: pd.DataFrame, scale: float, higher: bool = True) -> list[str]:
    """The best row(s) and those tied with it; "worse" rather than "below" where lower is better (ppl)."""
    if len(column) < 2:
        return [f"Only {_fmt(column.iloc[0], scale)} ran in this column: nothing to compare."]
    best = column[column["best"]]
    if best.empty:
        return []
    tied = column[column["tied_with_best"]].sort_values("mean", ascending=not higher)
    untestable = column[(column["n"] < 2) & ~column["best"]]
    line = f"Best: {', '.join(_fmt(r, scale) for _, r in best.iterrows())}"
    if len(tied):
        line += ("; statistically tied with it (Welch p ≥ 0.05): "
                 + ", ".join(f"{r['method']} (p = {r['p_vs_best']:.2f})" for _, r in tied.iterrows()))
    elif len(column) - len(best) - len(untestable) > 0:
        line += f"; every other row is significantly {'below' if higher else 'worse than'} it (Welch p < 0.05)"
    if len(untestable):
        line += f"; not testable (one seed): {', '.join(untestable['method'])}"
    return [line + "."]


def _versus_random(column: pd.DataFrame, scale: float, unit: str) -> list[str]:
    baseline = _row(column, RANDOM_BASELINE)
    if baseline is None:
        return []
    weak = column[column["vs_random"].isin(["tied", "below"])]
    if weak.empty:
        beat = column[column["vs_random"] == "above"]
        return [f"Every pruned row tested beats the random-pruning baseline ({len(beat)} rows, Welch p < 0.05)."]
    items = []
    for _, r in weak.iterrows():
        d = welch_difference(r["values"], baseline["values"])
        verdict = "significantly below" if r["vs_random"] == "below" else "indistinguishable"
        items.append(f"{r['method']} ({d.diff * scale:+.2f}{unit}, p = {d.p:.2f}: {verdict})")
    return [f"No better than random pruning ({RANDOM_BASELINE} {baseline['mean'] * scale:.2f}): {', '.join(items)}."]


def _versus_source(column: pd.DataFrame, scale: float, unit: str) -> list[str]:
    """One line on the controls of the column: each source minus its control, with the Welch interval."""
    if "vs_source" not in column:
        return []
    items = []
    for _, r in column[column["vs_source"].astype(bool)].iterrows():
        source = column[(column["base_method"] == r["source_method"]) & ~column["source_method"].astype(bool)]
        source = source.loc[source["method"].str.len().sort_values().index].iloc[0]
        d = welch_difference(source["values"], r["values"])
        verdict = {"below": f"{source['method']} beats its control", "tied": "indistinguishable",
                   "above": f"the control beats {source['method']}"}[r["vs_source"]]
        items.append(f"{source['method']} − {r['method']} = {d.diff * scale:+.2f}{unit} "
                     f"(95% CI {d.low * scale:+.2f} to {d.high * scale:+.2f}, p = {d.p:.3f}: {verdict})")
    return [f"Controls: {'; '.join(items)}."] if items else []


def _row(column: pd.DataFrame, method: str) -> pd.Series | None:
    """The row of ``method`` with the suite's default parameters (its label is the bare name), else its
    shortest-labelled variant."""
    rows = column[column["base_method"] == method]
    if rows.empty:
        return None
    exact = rows[rows["method"] == method]
    return (exact if len(exact) else rows.loc[rows["method"].str.len().sort_values().index]).iloc[0]


def _comparison(column: pd.DataFrame, a: str, b: str, scale: float, unit: str) -> str:
    ra, rb = _row(column, a), _row(column, b)
    d = welch_difference(ra["values"], rb["values"])
    head = f"{ra['method']} − {rb['method']}: {d.diff * scale:+.2f}{unit}"
    if math.isnan(d.p):
        return f"{head} (one seed on a side: no interval or test)."
    verdict = "significant" if d.p < ALPHA else "not significant"
    return (f"{head} (95% CI {d.low * scale:+.2f} to {d.high * scale:+.2f}), p = {d.p:.3f}: {verdict} at "
            f"p < {ALPHA:g}.")


def column_resolution(column: pd.DataFrame) -> tuple[float, int, float] | None:
    """(pooled sd, median seeds per row, smallest difference Welch's test resolves) of one column's
    finished cells, in the metric's units; None when no row has two seeds."""
    tested = column[(column["n"] >= 2) & (column["target_sparsity"] > 0)]
    if tested.empty:
        return None
    sd = math.sqrt(float((tested["std"] ** 2).mean()))
    n = int(tested["n"].median())
    return sd, n, resolvable_difference(sd, n)


def _resolution(column: pd.DataFrame, scale: float, unit: str) -> str:
    resolution = column_resolution(column)
    if resolution is None:
        return "Resolution: one seed per row, so no difference can be tested; run at least 2 seeds (3 or more " \
               "for a useful test)."
    sd, n, smallest = resolution
    smallest *= scale
    line = (f"Resolution: with {n} seeds per row and the spread measured here (pooled sd {sd * scale:.2f}{unit}), "
            f"differences of at least {smallest:.2f}{unit} reach p < {ALPHA:g} (Welch's t-test)")
    if unit:
        need = seeds_to_resolve(RESOLUTION_GOAL / scale, sd)
        if smallest <= RESOLUTION_GOAL:
            line += f"; it resolves {RESOLUTION_GOAL:g} point"
        elif need is not None:
            line += f"; about {need} seeds per row would resolve {RESOLUTION_GOAL:g} point"
        else:
            line += f"; even 1,000 seeds per row would not resolve {RESOLUTION_GOAL:g} point"
    return line + "."
