"""Report stage 2, summarise: the :class:`Report` of a suite, built from all its trial runs: the cells
(:mod:`pruning_bench.report.cells`) plus the header, warnings and notes a reader needs to trust them, as
plain text. Nothing here renders.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pruning_bench.core.units import is_clocked
from pruning_bench.errors import BenchError
from pruning_bench.report.cells import (
    COST_METRICS,
    RANDOM_BASELINE,
    SPARSITY_TOLERANCE,
    UNSPENT_TOLERANCE,
    cell_table,
    pct,
    scale_of,
)
from pruning_bench.report.data import (
    FAILED_STATUSES,
    FIT_LEVEL,
    col,
    latest_per_trial,
    prepare_runs,
    row_labels,
    values,
)
from pruning_bench.report.findings import DEFAULT_COMPARE
from pruning_bench.report.stats import ALPHA, ceil_2sig


@dataclass
class Report:
    """Everything a report shows, computed once: the tidy cells and plain-text header, warnings, notes."""

    suite: str
    metric: str
    cells: pd.DataFrame
    header: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compare: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_COMPARE))  # the suite's [report]

    @property
    def metric_label(self) -> str:
        return self.metric + scale_of(self.metric)[1]

    def tidy_csv(self) -> pd.DataFrame:
        columns = ["method", "base_method", "policy", "unit", "level", "budget_multiple", "target_sparsity", "metric",
                   "mean", "std", "n", "ci_low", "ci_high", "best", "tied_with_best", "p_vs_best", "seeds",
                   "vs_random", "source_method", "vs_source", "n_failed", "n_does_not_fit", "min_budget_epochs", "min_budget_multiple", "structured"]
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
    return Report(suite=suite, metric=metric, cells=cells, compare=list(compare or DEFAULT_COMPARE),
                  header=_header(prepared, finished, suite, metric, budget_policy, tracking_uri),
                  warnings=_warnings(prepared, finished, failed, runs, budget_policy),
                  notes=_notes(cells, finished, superseded, len(prepared) - len(finished_all) - len(failed)))


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
        ("Code", _code_versions(finished)),
        ("PyTorch", ", ".join(values(finished, "tags.torch_version"))),
        ("Devices", ", ".join(values(finished, "tags.device"))),
        ("Git commits", ", ".join(values(finished, "tags.git_commit"))),
        ("Tracking store", uri or "?"),
        ("Generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]


def _code_versions(finished: pd.DataFrame) -> str:
    """The code that computed the trials: harness source hashes and plugin module hashes, with counts."""
    parts = []
    for tag, what in (("tags.code_harness", "harness"), ("tags.code_plugins", "plugins")):
        counts = col(finished, tag, "").astype(str).replace("", np.nan).dropna().value_counts()
        if len(counts):
            parts.append(f"{what} " + ", ".join(f"{v} ({n} trials)" for v, n in sorted(counts.items())))
    return "; ".join(parts) or "not recorded (runs older than code identity)"


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
    plugins = col(finished, "tags.code_plugins", "").astype(str)
    for method, versions in plugins[plugins != ""].groupby(finished["method"]):
        if versions.nunique() > 1:
            out.append(f"Trials of {method} were computed by {versions.nunique()} versions of its plugin code "
                       f"({', '.join(sorted(versions.unique()))}): rows may mix two implementations.")
    if finished["unit"].map(is_clocked).any():
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


__all__ = ["Report", "build_report"]
