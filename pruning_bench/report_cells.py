"""Report stage 2, aggregate: trial runs -> one tidy cell per (budget level, row, target sparsity), and
the :class:`Report` (cells plus header, warnings and notes as plain text). Nothing here renders.

A *budget level* is (policy, unit, level): the level is a multiple of the base run (``2x``) or ``fit``, the
smallest budget at which every method of the plan fits, which may differ between sparsity columns (each
cell keeps its multiple). Methods are ranked only against rows of the same level and column. A
cell holds the latest finished run of each trial key (one per seed): the metric's mean, sample std, n
and 95% t interval, best/tied marks (Welch, :mod:`pruning_bench.report_stats`), failures, trials whose
method did not fit the budget (with the smallest budget that fits), and the mean cost, plan and sanity
measurements.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pruning_bench.errors import BenchError
from pruning_bench.report_data import (
    FAILED_STATUSES,
    FIT_LEVEL,
    col,
    explode_levels,
    latest_per_trial,
    level_order,
    prepare_runs,
    row_labels,
    values,
)
from pruning_bench.report_stats import ALPHA, ceil_2sig, higher_is_better, rank_column, summarize, welch_p

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
               "base_method": _first(cell, fails, "method"), "target_sparsity": target, "metric": metric,
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
    return _mark_vs_random(_mark_best(table, finished, higher), finished, higher)


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
            mine = cells[rec["method"]]
            p = welch_p(mine, reference)
            if math.isnan(p):
                continue
            better = (np.mean(mine) > np.mean(reference)) == higher
            table.loc[idx, "vs_random"] = "tied" if p >= ALPHA else "above" if better else "below"
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


@dataclass
class Report:
    """Everything a report shows, computed once: the tidy cells and plain-text header, warnings, notes."""

    suite: str
    metric: str
    cells: pd.DataFrame
    header: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compare: list[tuple[str, str]] = field(default_factory=lambda: [("swamp", "imp")])  # the suite's [report]

    @property
    def metric_label(self) -> str:
        return self.metric + scale_of(self.metric)[1]

    def tidy_csv(self) -> pd.DataFrame:
        columns = ["method", "base_method", "policy", "unit", "level", "budget_multiple", "target_sparsity", "metric",
                   "mean", "std", "n", "ci_low", "ci_high", "best", "tied_with_best", "p_vs_best", "seeds",
                   "vs_random", "n_failed", "n_does_not_fit", "min_budget_epochs", "min_budget_multiple", "structured"]
        columns += [f"{m}_mean" for m in COST_METRICS] + ["off_target", "emptied_layer_trials"]
        return self.cells.sort_values(["policy", "unit", "level", "budget_multiple", "target_sparsity", "method"])[
            columns].reset_index(drop=True)


def build_report(runs: pd.DataFrame, suite: str, *, metric: str = "test_acc", budget_policy: str | None = None,
                 tracking_uri: str = "", compare: list[tuple[str, str]] | None = None) -> Report:
    """A :class:`Report` from all trial runs of a suite (any status, as from ``load_runs(status=None)``)."""
    if runs.empty:
        raise BenchError(f"suite '{suite}' has no trial runs in {tracking_uri or 'the tracking store'}")
    prepared = prepare_runs(runs, metric, budget_policy)
    if prepared.empty:
        policies = ", ".join(values(runs, "tags.budget_policy"))
        raise BenchError(f"suite '{suite}' has no trial runs with budget policy '{budget_policy}' "
                         f"(recorded policies: {policies or 'none'})")
    finished_all = prepared[prepared["status"] == "FINISHED"]
    failed = prepared[prepared["status"].isin(FAILED_STATUSES)]
    if finished_all.empty:
        raise BenchError(f"suite '{suite}' has no finished trial runs in {tracking_uri or 'the tracking store'} "
                         f"({len(failed)} FAILED/KILLED, {len(prepared) - len(failed)} unfinished)")
    ran = finished_all[finished_all["outcome"] != "does_not_fit"]
    if f"metrics.{metric}" not in runs or (len(ran) and ran["value"].isna().all()):
        known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise BenchError(f"metric '{metric}' was not logged by any finished run of suite '{suite}'; "
                         f"logged metrics: {', '.join(known)}")
    finished, superseded = latest_per_trial(finished_all)
    cells = cell_table(finished, failed, metric)
    return Report(suite=suite, metric=metric, cells=cells, compare=list(compare or [("swamp", "imp")]),
                  header=_header(prepared, finished, suite, metric, budget_policy, tracking_uri),
                  warnings=_warnings(prepared, finished, failed, runs, budget_policy),
                  notes=_notes(cells, finished, superseded, len(prepared) - len(finished_all) - len(failed)))


def pct(s: float) -> str:
    return f"{s * 100:.4g}%"


def _header(prepared: pd.DataFrame, finished: pd.DataFrame, suite: str, metric: str, policy: str | None,
            uri: str) -> list[tuple[str, str]]:
    seeds = sorted(int(s) for s in finished["seed"].dropna().unique())
    epochs = sorted({f"{float(e):g}" for e in values(finished, "params.suite.budget.epochs")}, key=float)
    versions = [f"{h} (result version {r})" for h, r in
                sorted(set(zip(col(finished, "tags.harness_version").astype(str),
                               col(finished, "tags.result_version").astype(str), strict=True)))]
    multiples = ", ".join(f"{m:g}x" for m in sorted(finished["multiple"].unique()))
    if (col(finished, "tags.budget_level", "").astype(str).str.contains(FIT_LEVEL)).any():
        multiples = f"{multiples} (fit: the smallest at which every method of the plan fits, per column)"
    return [
        ("Suite", suite),
        ("Data set / model", f"{', '.join(values(finished, 'tags.dataset')) or '?'} / "
                             f"{', '.join(values(finished, 'tags.model')) or '?'}"),
        ("Budget policy", ", ".join(sorted(finished["policy"].unique()))
         + (" (selected with --budget-policy)" if policy else "")),
        ("Budget unit", ", ".join(sorted(finished["unit"].unique()))),
        ("Budget levels", f"{multiples} of the base run ({', '.join(epochs) or '?'} epochs)"),
        ("Seeds", f"{', '.join(map(str, seeds))} ({len(seeds)})"),
        ("Metric", f"{metric}: final model, test split; mean ± sample std (n seeds)"),
        ("Trial runs", f"{len(finished)} finished (latest per trial key; "
                       f"{int((finished['outcome'] == 'does_not_fit').sum())} did not fit their budget), "
                       f"{len(prepared)} in the store"),
        ("Harness", ", ".join(versions)),
        ("PyTorch", ", ".join(values(finished, "tags.torch_version"))),
        ("Devices", ", ".join(values(finished, "tags.device"))),
        ("Git commits", ", ".join(values(finished, "tags.git_commit"))),
        ("Tracking store", uri or "?"),
        ("Generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]


def _warnings(prepared: pd.DataFrame, finished: pd.DataFrame, failed: pd.DataFrame, runs: pd.DataFrame,
              policy: str | None) -> list[str]:
    out = []
    for tag, what in (("tags.harness_version", "harness versions"), ("tags.result_version", "result versions")):
        found = values(finished, tag)
        if len(found) > 1:
            out.append(f"Runs mix {what} ({', '.join(found)}): numbers from different harness versions may "
                       "not be comparable.")
    policies = sorted(finished["policy"].unique())
    if len(policies) > 1:
        out.append(f"Runs mix budget policies ({', '.join(policies)}); each has its own leaderboards. Use "
                   "--budget-policy to report one.")
    threads = values(finished[col(finished, "tags.device", "").str.startswith("cpu")], "tags.threads")
    if len(threads) > 1:
        out.append(f"CPU runs used different torch thread counts ({', '.join(threads)}), shown in the device "
                   "column of the cost table: the count changes the floating-point summation order, so "
                   "otherwise identical trials differ by seed-noise amounts.")
    if (finished["unit"] == "seconds").any():
        out.append("Some budgets are in seconds of wall-clock on the trial's device: those rows are not "
                   "comparable across machines (see the device column of the cost table).")
    _, differing = row_labels(prepared)
    if differing:
        out.append(f"Runs differ in suite settings ({', '.join(differing)}); rows are split by them.")
    if len(failed):
        names = ", ".join(sorted(f"{r} @ {pct(t) if t > 0 else 'dense'} {m:g}x seed "
                                 f"{int(s) if not math.isnan(s) else '?'} ({st})" for r, t, m, s, st in
                                 zip(failed["row"], failed["target"], failed["multiple"], failed["seed"],
                                     failed["status"], strict=True)))
        out.append(f"{len(failed)} trial run(s) FAILED or were KILLED: {names}.")
    if policy:
        others = values(runs[col(runs, "tags.budget_policy") != policy], "tags.budget_policy")
        if others:
            n = int((col(runs, "tags.budget_policy") != policy).sum())
            out.append(f"{n} run(s) with other budget policies ({', '.join(others)}) are left out "
                       f"(--budget-policy {policy}).")
    return out


def _notes(cells: pd.DataFrame, finished: pd.DataFrame, superseded: int, unfinished: int) -> list[str]:
    out = []
    counts = cells.loc[cells["n"] > 0, "n"]
    if len(counts) and counts.max() <= 1:
        out.append("Only one seed per cell: no standard deviations, confidence intervals or significance tests; "
                   "differences may be noise.")
    elif len(counts) and counts.min() <= 1:
        out.append("Some cells have a single seed: they show no std and are never marked as tied.")
    dnf = cells[cells["n_does_not_fit"] > 0]
    if len(dnf):
        items = "; ".join(sorted({f"{m} @ {pct(t)}: needs >= {ceil_2sig(x)}x" for m, t, x in
                                  zip(dnf["method"], dnf["target_sparsity"], dnf["min_budget_multiple"], strict=True)}))
        out.append("Cells reading 'needs >= N x' are trials whose method's own schedule (its rounds, each at least "
                   "the suite's min_round_epochs long, and particles) does not fit that budget; they were "
                   f"recorded, not run as something else. Smallest budget that fits: {items}.")
    marked = cells[cells["vs_random"].isin(["tied", "below"])]
    if len(marked):
        items = "; ".join(f"{m} @ {pct(t)} {x:g}x: {'indistinguishable from' if v == 'tied' else 'below'} random"
                          for m, t, x, v in zip(marked["method"], marked["target_sparsity"],
                                                marked["budget_multiple"], marked["vs_random"], strict=True))
        out.append(f"Cells marked 'n.s. vs random' (Welch p >= {ALPHA:g}) or '< random' (significantly lower) do "
                   f"not beat the random-pruning baseline (the plain '{RANDOM_BASELINE}' row) at the same sparsity "
                   f"and budget: {items}.")
    ran = finished[finished["outcome"] != "does_not_fit"]
    off = ran[(ran["target"] > 0) & ((col(ran, "metrics.sparsity") - ran["target"]).abs() > SPARSITY_TOLERANCE)]
    if len(off):
        out.append(_off_target_note(off))
    emptied = ran[col(ran, "metrics.empty_layers").fillna(0) > 0]
    if len(emptied):
        items = ", ".join(f"{r} @ {pct(t)} seed {int(s)} ({int(e)} layer(s))" for r, t, s, e in
                          zip(emptied["row"], emptied["target"], emptied["seed"], emptied["metrics.empty_layers"],
                              strict=True))
        out.append(f"Trials that left a prunable layer without any weight (the network may be disconnected): {items}.")
    one_round = (cells["plan_round_epochs_mean"] * cells["plan_particles_mean"] / cells["budget_epochs_mean"]).fillna(0)
    unspent = cells[(cells["policy"] == "equal")
                    & (cells["budget_unspent_fraction_mean"] > one_round.clip(lower=UNSPENT_TOLERANCE))]
    if len(unspent):
        items = ", ".join(f"{m} @ {pct(t)} {x:g}x ({100 * u:.1f}%)" for m, t, x, u in
                          zip(unspent["method"], unspent["target_sparsity"], unspent["budget_multiple"],
                              unspent["budget_unspent_fraction_mean"], strict=True))
        out.append(f"Equal-budget cells that left more than one round of their budget unspent (one step for "
                   f"methods without rounds; at least {100 * UNSPENT_TOLERANCE:g}%): {items}.")
    commits = values(finished, "tags.git_commit")
    if len(commits) > 1 or any(c.endswith("-dirty") for c in commits):
        out.append(f"The runs come from {len(commits)} git state(s) ({', '.join(commits)}; -dirty = uncommitted "
                   "changes): the harness code may differ between rows.")
    if superseded:
        out.append(f"{superseded} older finished run(s) of rerun trials are ignored (the latest run per trial key "
                   "counts).")
    if unfinished:
        out.append(f"{unfinished} trial run(s) are still RUNNING or never ended (e.g. a killed process); not counted.")
    return out


def _off_target_note(off: pd.DataFrame) -> str:
    items = []
    for (row, target), cell in off.sort_values("seed").groupby(["row", "target"], sort=True):
        seeds = ", ".join(f"{int(s)} ({100 * a:.2f}%)" for s, a in zip(cell["seed"], cell["metrics.sparsity"],
                                                                       strict=True))
        items.append(f"{row} @ {pct(target)}: seed {seeds}")
    text = f"Achieved sparsity off the target by more than {SPARSITY_TOLERANCE * 100:g} pp: {'; '.join(items)}."
    structured = sorted(off.loc[off["granularity"] == "structured", "method"].unique())
    if structured:
        text += (f" {', '.join(structured)} prune(s) whole channels, so the achieved sparsity (counted over all "
                 "conv and linear weights, like every method) can legitimately differ from the target; compare "
                 "them at their achieved sparsity (the plots use it).")
    patterned = sorted(off.loc[off["granularity"] == "semi_structured", "method"].unique())
    if patterned:
        text += (f" {', '.join(patterned)} impose(s) an N:M pattern only on layers whose input size allows it; the "
                 "others stay dense, so the achieved sparsity is below N:M's own.")
    return text


__all__ = ["COST_METRICS", "LEVEL", "Report", "build_report", "cell_table", "level_cells", "levels", "pct",
           "scale_of"]
