"""Report stage 2, aggregate: trial runs -> one tidy cell per (budget level, row, target sparsity); the
:class:`~pruning_bench.report.summary.Report` wraps them with its header, warnings and notes. Nothing here
renders.

A *budget level* is (policy, unit, level): the level is a multiple of the base run (``2x``) or ``fit``, the
smallest budget at which every method of the plan fits, which may differ between sparsity columns (each
cell keeps its multiple). Methods are ranked only against rows of the same level and column. A
cell holds the latest finished run of each trial key (one per seed): the metric's mean, sample std, n
and 95% t interval, best/tied marks (Welch, :mod:`pruning_bench.report.stats`), failures, trials whose
method did not fit the budget (with the smallest budget that fits), and the mean cost, plan and sanity
measurements.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pruning_bench.report.data import (
    FIT_LEVEL,
    col,
    explode_levels,
    level_order,
    values,
)
from pruning_bench.report.stats import ALPHA, higher_is_better, rank_column, summarize, welch_p

RANDOM_BASELINE = "random"  # the sanity baseline's method name (methods/random_pruning.py)
SPARSITY_TOLERANCE = 0.005  # achieved vs target sparsity: flag trials off by more than 0.5 percentage points
UNSPENT_TOLERANCE = 0.01    # equal budgets: flag cells that left more than a round (at least 1%) unspent
LEVEL = ["policy", "unit", "level"]
# Metrics averaged per cell besides the reported one (missing in some runs -> NaN, never zero).
COST_METRICS = ("sparsity", "epochs_charged", "train_flops", "train_seconds", "flops_effective", "flops_dense",
                "latency_ms", "empty_layers", "peak_memory_mb", "budget_epochs", "budget_unspent_fraction",
                "plan_rounds", "plan_round_epochs", "plan_particles", "plan_dense_particles",
                "min_channels_kept_fraction")


def scale_of(metric: str) -> tuple[float, str]:
    """Accuracies are shown in percent."""
    return (100.0, " (%)") if metric.endswith("acc") or metric.endswith("top5") else (1.0, "")


def cell_table(finished: pd.DataFrame, failed: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The tidy leaderboard: one row per (level, row label, target sparsity)."""
    recovered = set(finished["tags.trial_key"])
    lost = explode_levels(failed[~failed["tags.trial_key"].isin(recovered)])
    finished, failed = explode_levels(finished), explode_levels(failed)
    both = pd.concat([finished, failed])
    keys = sorted(set(zip(*(both[c] for c in [*LEVEL, "multiple", "row", "target"]), strict=True)),
                  key=lambda k: (k[0], k[1], level_order(k[2]), k[5], k[4], k[3]))
    records = []
    for policy, unit, level, multiple, row, target in keys:
        where = {"policy": policy, "unit": unit, "level": level, "multiple": multiple, "row": row,
                 "target": target}
        cell, fails, lost_here = (_select(f, where) for f in (finished, failed, lost))
        done = cell[cell["outcome"] != "does_not_fit"]
        dnf = cell[cell["outcome"] == "does_not_fit"]
        s = summarize(done["value"].tolist())
        base_epochs = (col(cell, "metrics.budget_epochs") / cell["multiple"]).dropna()
        rec = {"policy": policy, "unit": unit, "level": level, "budget_multiple": multiple, "method": row,
               "base_method": _first(cell, fails, "method"), "source_method": _first(cell, fails, "source"),
               "target_sparsity": target, "metric": metric,
               "mean": s.mean, "std": s.std, "n": s.n, "ci_low": s.ci_low, "ci_high": s.ci_high,
               "seeds": " ".join(str(int(x)) for x in sorted(done["seed"].dropna().unique())),
               "values": done.sort_values("seed")["value"].dropna().tolist(),
               "n_failed": len(fails), "n_failed_unrecovered": len(lost_here), "n_does_not_fit": len(dnf),
               "min_budget_epochs": float(col(dnf, "metrics.min_budget_epochs").max()) if len(dnf) else math.nan,
               "base_epochs": float(base_epochs.iloc[0]) if len(base_epochs) else math.nan,
               "structured": bool(cell["structured"].any() or fails["structured"].any())}
        for m in COST_METRICS:
            rec[f"{m}_mean"] = float(col(done, f"metrics.{m}").mean()) if len(done) else math.nan
        if len(dnf) and not len(done):
            rec["budget_epochs_mean"] = float(col(dnf, "metrics.budget_epochs").mean())
        rec["min_budget_multiple"] = rec["min_budget_epochs"] / rec["base_epochs"] if rec["base_epochs"] else math.nan
        achieved = col(done, "metrics.sparsity")
        rec["off_target"] = int(((achieved - target).abs() > SPARSITY_TOLERANCE).sum()) if target > 0 else 0
        rec["max_sparsity_error_pp"] = float((achieved - target).abs().max() * 100) if len(done) else math.nan
        rec["emptied_layer_trials"] = int((col(done, "metrics.empty_layers").fillna(0) > 0).sum())
        rec["devices"] = ", ".join(values(done, "tags.device"))
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    higher = higher_is_better(metric)
    table = _mark_vs_random(_mark_best(table, finished, higher), finished, higher)
    return _mark_vs_source(table, finished, higher)


def _select(frame: pd.DataFrame, where: dict) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in where.items():
        mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def _first(a: pd.DataFrame, b: pd.DataFrame, column: str) -> str:
    for frame in (a, b):
        if column in frame and frame[column].notna().any():
            return str(frame[column].dropna().iloc[0])
    return ""


def _columns(rows: pd.DataFrame, finished: pd.DataFrame):
    """Per leaderboard column (budget level and target sparsity > 0) of ``rows``: its rows and, per row
    label, the metric values of its finished (not does-not-fit) runs."""
    done = finished[finished["outcome"] != "does_not_fit"]
    for (policy, unit, level, target), group in rows[rows["target_sparsity"] > 0].groupby(
            ["policy", "unit", "level", "target_sparsity"]):
        here = _select(done, {"policy": policy, "unit": unit, "level": level, "target": target})
        yield group, {r: here[here["row"] == r]["value"].dropna().tolist() for r in group["method"]}


def _mark_best(table: pd.DataFrame, finished: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Per budget level and target sparsity > 0, the best row(s) and those indistinguishable from it
    (methods are only ranked against the same budget); reference rows (sparsity 0) are not ranked, nor
    is a row alone in its column (N:M's 50% in a sweep at 90%): best of one says nothing."""
    table["best"], table["tied_with_best"], table["p_vs_best"] = False, False, math.nan
    if table.empty:
        return table
    for group, cells in _columns(table[table["n"] > 0], finished):
        if len(group) < 2:
            continue
        ranking = rank_column(cells, higher=higher)
        for idx, r in zip(group.index, group["method"], strict=True):
            if r in ranking.best:
                table.loc[idx, ["best", "tied_with_best", "p_vs_best"]] = \
                    [ranking.best[r], ranking.tied[r], ranking.p_vs_best[r]]
    return table


def _mark_vs_random(table: pd.DataFrame, finished: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Per budget level and target sparsity, each pruned row against the random-pruning baseline of the
    same cell (the row of method ``random`` with the default parameters, i.e. the shortest such label):
    ``vs_random`` is ``above``, ``below`` (Welch p < ALPHA) or ``tied``; empty where there is no baseline,
    fewer than two seeds on either side, or the row missed its target sparsity (N:M's fixed 50%)."""
    table["vs_random"] = ""
    if table.empty:
        return table
    for group, cells in _columns(table, finished):
        baselines = sorted(group.loc[group["base_method"] == RANDOM_BASELINE, "method"], key=len)
        if not baselines:
            continue
        reference = cells[baselines[0]]
        for idx, rec in group.iterrows():
            if rec["base_method"] == RANDOM_BASELINE or rec["n"] < 2 or rec["off_target"]:
                continue
            table.loc[idx, "vs_random"] = _versus(cells[rec["method"]], reference, higher)
    return table


def _versus(mine: list[float], reference: list[float], higher: bool) -> str:
    """``above``, ``below`` (Welch p < ALPHA) or ``tied`` against ``reference``; '' when untestable."""
    p = welch_p(mine, reference)
    if math.isnan(p):
        return ""
    better = (np.mean(mine) > np.mean(reference)) == higher
    return "tied" if p >= ALPHA else "above" if better else "below"


def _mark_vs_source(table: pd.DataFrame, finished: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Per budget level and target sparsity, each control row (``reinit [source=imp]``) against its
    source's row of the same cell (the source method with the suite's parameters): ``vs_source`` is
    ``below`` (the source beats its control, Welch p < ALPHA), ``tied`` or ``above``; empty for other rows
    and where either side has fewer than two seeds."""
    table["vs_source"] = ""
    if table.empty or "source_method" not in table:
        return table
    for group, cells in _columns(table, finished):
        for idx, rec in group[group["source_method"].astype(bool)].iterrows():
            sources = sorted(group.loc[(group["base_method"] == rec["source_method"])
                                       & ~group["source_method"].astype(bool), "method"], key=len)
            if not sources or rec["n"] < 2:
                continue
            table.loc[idx, "vs_source"] = _versus(cells[rec["method"]], cells[sources[0]], higher)
    return table


def levels(cells: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The budget levels present, in reading order (policy, unit, level): equal before native, epochs
    first, ``fit`` before the multiples."""
    keys = {(p, u, lv) for p, u, lv in zip(cells["policy"], cells["unit"], cells["level"], strict=True)}
    keys -= {k for k in keys if k[2] != FIT_LEVEL and _same_cells(cells, k, (k[0], k[1], FIT_LEVEL))}
    return sorted(keys, key=lambda k: (k[0] != "equal", k[1] != "epochs", k[0], k[1], level_order(k[2])))


def shown_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells of the levels the report shows (:func:`levels`: a level identical to ``fit`` is shown once)."""
    keep = set(levels(cells))
    return cells[[k in keep for k in zip(cells["policy"], cells["unit"], cells["level"], strict=True)]]


def _same_cells(cells: pd.DataFrame, a: tuple[str, str, str], b: tuple[str, str, str]) -> bool:
    """Whether two levels hold the very same cells (a fit level that resolved to 1x in every column of a
    plan whose methods all fit the base run): the report then shows it once, as ``fit``."""
    def signature(level: tuple[str, str, str]) -> set:
        here = level_cells(cells, level)
        return set(zip(here["method"], here["target_sparsity"], here["budget_multiple"], here["n"], strict=True))
    other = signature(b)
    return bool(other) and signature(a) == other


def level_cells(cells: pd.DataFrame, level: tuple[str, str, str]) -> pd.DataFrame:
    policy, unit, name = level
    return cells[(cells["policy"] == policy) & (cells["unit"] == unit) & (cells["level"] == name)]


def pct(s: float) -> str:
    return f"{s * 100:.4g}%"


__all__ = ["COST_METRICS", "LEVEL", "cell_table", "level_cells", "levels", "pct",
           "scale_of"]
