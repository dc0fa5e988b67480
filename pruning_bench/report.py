"""Reports from the tracking store: ``mlflow.search_runs`` -> pandas -> leaderboard, cost and sanity tables.

The report reads nothing but MLflow, so runs from any machine that logged to the same store appear.
:func:`build_report` turns the trial runs of one suite into a :class:`Report` (tidy cell statistics plus
display tables); :func:`write_report` writes ``report.md``, ``leaderboard.csv``, ``report.html`` and
the plots; :func:`log_report_run` stores them as artifacts of a "report" run (no ``trial_key`` tag, so
it is never mistaken for a trial).

Rows are methods, split into variants when runs of a method differ in a method or suite parameter
(e.g. ``global_magnitude [schedule=gradual]``) or in budget policy, so different experiments are never
averaged together. Cells are target sparsities; a cell's values are one per seed (the latest finished
run of each trial key).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pruning_bench.errors import BenchError
from pruning_bench.report_stats import TEST_DESCRIPTION, higher_is_better, rank_column, si_split, summarize
from pruning_bench.tracking import _quiet_mlflow, tracking_uri_scope

FORMATS = ("md", "html", "csv")
SPARSITY_TOLERANCE = 0.005  # achieved vs target sparsity: flag trials off by more than 0.5 percentage points
FAILED_STATUSES = ("FAILED", "KILLED")
# Suite parameters that do not change what a trial computes (where the data lives).
_IGNORED_PARAMS = ("params.suite.dataset.data_dir", "params.suite.dataset.download")
# Metrics averaged per cell besides the reported one (missing in some runs -> NaN, never zero).
COST_METRICS = ("sparsity", "epochs_charged", "train_flops", "train_seconds", "flops_effective", "flops_dense",
                "latency_ms", "empty_layers", "peak_memory_mb")
MISSING = "—"


# ----------------------------------------------------------------------------------------- loading

def load_runs(tracking_uri: str, suite: str, *, status: str | None = "FINISHED") -> pd.DataFrame:
    """Trial runs (those with a ``trial_key`` tag) of a suite's experiment, one row per run."""
    _quiet_mlflow()
    import mlflow

    with tracking_uri_scope(tracking_uri):
        try:
            experiment = mlflow.get_experiment_by_name(suite)
        except Exception as err:  # a wrong URI must be one clear line, not a traceback
            raise BenchError(f"cannot open the MLflow tracking store '{tracking_uri}': {err}") from None
        if experiment is None:
            raise BenchError(f"no runs recorded for suite '{suite}' in {tracking_uri}; "
                             f"run `bench run --suite {suite}` first")
        filters = ["tags.trial_key != ''"]
        if status:
            filters.append(f"attributes.status = '{status}'")
        runs = mlflow.search_runs(experiment_names=[suite], filter_string=" and ".join(filters),
                                  output_format="pandas", max_results=100_000)
    if not runs.empty and "tags.trial_key" in runs:
        runs = runs[runs["tags.trial_key"].notna()].reset_index(drop=True)
    return runs


def _col(runs: pd.DataFrame, name: str) -> pd.Series:
    """A column of ``runs``, or NaN everywhere when no run logged it (a metric added later)."""
    return runs[name] if name in runs else pd.Series(np.nan, index=runs.index, dtype=float)


def _variant_columns(runs: pd.DataFrame) -> list[str]:
    return sorted(c for c in runs.columns
                  if (c.startswith("params.method.") or c.startswith("params.suite.") or c == "tags.budget_policy")
                  and c not in _IGNORED_PARAMS)


def _differing(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].dropna().astype(str).nunique() > 1]


def _short(column: str) -> str:
    name = column.removeprefix("params.").removeprefix("tags.")
    return name.removeprefix("method.").removeprefix("suite.")


def row_labels(runs: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """A row label per run: the method name, plus the parameters in which its runs differ.

    Returns the labels and the suite-level parameters that differ across all runs (for a warning).
    """
    columns = _variant_columns(runs)
    suite_cols = [c for c in columns if not c.startswith("params.method.")]
    global_diff = _differing(runs, suite_cols)
    labels = pd.Series("", index=runs.index, dtype=object)
    for method, group in runs.groupby("method", sort=False):
        method_diff = _differing(group, [c for c in columns if c.startswith("params.method.")])
        split = global_diff + method_diff
        for idx, run in group.iterrows():
            parts = [f"{_short(c)}={run[c]}" for c in split if isinstance(run[c], str)]
            labels[idx] = f"{method} [{', '.join(parts)}]" if parts else str(method)
    return labels, [_short(c) for c in global_diff]


def prepare_runs(runs: pd.DataFrame, metric: str, budget_policy: str | None = None) -> pd.DataFrame:
    """Normalize the search result: method, row, target, seed, status and the metric as ``value``."""
    runs = runs.copy()
    if budget_policy:
        runs = runs[_col(runs, "tags.budget_policy") == budget_policy]
    runs["method"] = runs["tags.method"].astype(str)
    runs["target"] = pd.to_numeric(runs["tags.target_sparsity"], errors="coerce").astype(float)
    runs["seed"] = pd.to_numeric(_col(runs, "tags.seed"), errors="coerce")
    runs["value"] = pd.to_numeric(_col(runs, f"metrics.{metric}"), errors="coerce").astype(float)
    runs["row"], _ = row_labels(runs) if not runs.empty else (pd.Series(dtype=object), [])
    return runs.reset_index(drop=True)


def latest_per_trial(finished: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The latest finished run of every trial key (``--rerun`` makes several), and how many were dropped."""
    ordered = finished.sort_values("start_time") if "start_time" in finished else finished
    latest = ordered.drop_duplicates("tags.trial_key", keep="last")
    return latest.sort_index(), len(finished) - len(latest)


# ------------------------------------------------------------------------------------------ cells

def cell_table(finished: pd.DataFrame, failed: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The tidy leaderboard: one row per (row label, target sparsity) with the metric's statistics,
    best/tied marks, failure counts and the mean cost and sanity measurements."""
    recovered = set(finished["tags.trial_key"])
    lost = failed[~failed["tags.trial_key"].isin(recovered)]
    keys = sorted(set(zip(finished["row"], finished["target"])) | set(zip(failed["row"], failed["target"])),
                  key=lambda k: (k[1], k[0]))
    records = []
    for row, target in keys:
        cell = finished[(finished["row"] == row) & (finished["target"] == target)]
        fails = failed[(failed["row"] == row) & (failed["target"] == target)]
        s = summarize(cell["value"].tolist())
        rec = {"method": row, "base_method": _first(cell, fails, "method"), "target_sparsity": target,
               "metric": metric, "mean": s.mean, "std": s.std, "n": s.n, "ci_low": s.ci_low, "ci_high": s.ci_high,
               "seeds": " ".join(str(int(x)) for x in sorted(cell["seed"].dropna().unique())),
               "n_failed": len(fails),
               "n_failed_unrecovered": int(((lost["row"] == row) & (lost["target"] == target)).sum()),
               "budget_policy": _first(cell, fails, "tags.budget_policy")}
        for m in COST_METRICS:
            rec[f"{m}_mean"] = float(_col(cell, f"metrics.{m}").mean()) if len(cell) else math.nan
        achieved = _col(cell, "metrics.sparsity")
        rec["off_target"] = int(((achieved - target).abs() > SPARSITY_TOLERANCE).sum()) if target > 0 else 0
        rec["max_sparsity_error_pp"] = float((achieved - target).abs().max() * 100) if len(cell) else math.nan
        rec["emptied_layer_trials"] = int((_col(cell, "metrics.empty_layers").fillna(0) > 0).sum())
        rec["devices"] = ", ".join(sorted(cell["tags.device"].dropna().astype(str).unique())) \
            if "tags.device" in cell else ""
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    return _mark_best(table, finished, higher_is_better(metric))


def _first(a: pd.DataFrame, b: pd.DataFrame, column: str) -> str:
    for frame in (a, b):
        if column in frame and frame[column].notna().any():
            return str(frame[column].dropna().iloc[0])
    return ""


def _mark_best(table: pd.DataFrame, finished: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Per target sparsity > 0 and budget policy (methods are only ranked against the same budget rules),
    the best row(s) and those indistinguishable from it; reference rows (sparsity 0) are not ranked."""
    table["best"], table["tied_with_best"], table["p_vs_best"] = False, False, math.nan
    ranked = table[(table["target_sparsity"] > 0) & (table["n"] > 0)]
    for (target, _), group in ranked.groupby(["target_sparsity", "budget_policy"]):
        cells = {r: finished[(finished["row"] == r) & (finished["target"] == target)]["value"].dropna().tolist()
                 for r in group["method"]}
        ranking = rank_column(cells, higher=higher)
        for idx, r in zip(group.index, group["method"]):
            if r in ranking.best:
                table.loc[idx, ["best", "tied_with_best", "p_vs_best"]] = \
                    [ranking.best[r], ranking.tied[r], ranking.p_vs_best[r]]
    return table


# ---------------------------------------------------------------------------------------- display

def _scale(metric: str) -> tuple[float, str]:
    """Accuracies are shown in percent."""
    return (100.0, " (%)") if metric.endswith("acc") or metric.endswith("top5") else (1.0, "")


def _pct(s: float) -> str:
    return f"{s * 100:.4g}%"


def _fmt_cell(rec: pd.Series, scale: float) -> str:
    if rec["n"] == 0:
        return f"FAILED ({int(rec['n_failed'])})" if rec["n_failed"] else MISSING
    mean = rec["mean"] * scale
    digits = 2 if abs(mean) < 1000 else 0
    text = f"{mean:.{digits}f}" + (f" ± {rec['std'] * scale:.{digits}f}" if rec["n"] > 1 else "")
    count = f"{int(rec['n'])}" + (f"; {int(rec['n_failed_unrecovered'])} failed" if rec["n_failed_unrecovered"] else "")
    return f"{text} ({count})"


@dataclass
class Cell:
    text: str
    kind: str = "normal"  # best | tied | ref | missing | failed | normal


def row_order(rows: list[str], references: set[str]) -> list[str]:
    """Reference rows (dense) first, then methods alphabetically."""
    return sorted(rows, key=lambda r: (r not in references, not r.startswith("dense"), r))


def leaderboard_cells(cells: pd.DataFrame, metric: str) -> tuple[list[str], list[str], list[list[Cell]]]:
    """Row labels, column labels and the display cells of the leaderboard.

    Reference rows (target sparsity 0, the dense baseline) repeat their value in every column.
    """
    scale, _ = _scale(metric)
    refs = set(cells.loc[cells["target_sparsity"] == 0, "method"])
    targets = sorted(t for t in cells["target_sparsity"].unique() if t > 0) or [0.0]
    rows = row_order(sorted(cells["method"].unique()), refs)
    grid: list[list[Cell]] = []
    for row in rows:
        line = []
        for target in targets:
            t = 0.0 if row in refs else target
            match = cells[(cells["method"] == row) & (cells["target_sparsity"] == t)]
            if match.empty:
                line.append(Cell(MISSING, "missing"))
                continue
            rec = match.iloc[0]
            kind = ("ref" if row in refs else "best" if rec["best"] else "tied" if rec["tied_with_best"]
                    else "missing" if rec["n"] == 0 and not rec["n_failed"] else "failed" if rec["n"] == 0
                    else "normal")
            line.append(Cell(_fmt_cell(rec, scale), kind))
        grid.append(line)
    columns = [_pct(t) if t > 0 else "dense (0%)" for t in targets]
    return rows, columns, grid


_MD_MARK = {"best": "**{}** ★", "tied": "{} ≈", "ref": "_{}_"}


def leaderboard_markdown_table(cells: pd.DataFrame, metric: str) -> str:
    rows, columns, grid = leaderboard_cells(cells, metric)
    body = [[row] + [_MD_MARK.get(c.kind, "{}").format(c.text) for c in line] for row, line in zip(rows, grid)]
    frame = pd.DataFrame(body, columns=["method \\ target sparsity"] + columns)
    return frame.to_markdown(index=False, colalign=["left"] + ["right"] * len(columns))


def leaderboard(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows = methods (dense first), columns = target sparsities, cells = 'mean ± std (n)' (percent for
    accuracies) from finished trial runs as returned by :func:`load_runs`."""
    if runs.empty or f"metrics.{metric}" not in runs:
        raise BenchError(f"no finished runs with metric '{metric}' to report")
    prepared = prepare_runs(runs, metric)
    latest, _ = latest_per_trial(prepared)
    cells = cell_table(latest, prepared.iloc[0:0], metric)
    rows, columns, grid = leaderboard_cells(cells, metric)
    return pd.DataFrame([[c.text for c in line] for line in grid], index=pd.Index(rows, name="method"),
                        columns=columns)


def leaderboard_markdown(runs: pd.DataFrame, metric: str = "test_acc") -> str:
    """The leaderboard as a Markdown table, best per column in bold (used at the end of `bench run`)."""
    if runs.empty or f"metrics.{metric}" not in runs:
        raise BenchError(f"no finished runs with metric '{metric}' to report")
    prepared = prepare_runs(runs, metric)
    latest, _ = latest_per_trial(prepared)
    return leaderboard_markdown_table(cell_table(latest, prepared.iloc[0:0], metric), metric)


def _si(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    scaled, prefix = si_split(value)
    return f"{scaled:.3g} {prefix}{unit}".strip()


def _num(value: float, fmt: str = "{:.3g}") -> str:
    return MISSING if value is None or math.isnan(value) else fmt.format(value)


def _ordered(cells: pd.DataFrame) -> pd.DataFrame:
    refs = set(cells.loc[cells["target_sparsity"] == 0, "method"])
    order = {r: i for i, r in enumerate(row_order(sorted(cells["method"].unique()), refs))}
    return cells.assign(_o=cells["method"].map(order)).sort_values(["_o", "target_sparsity"]).drop(columns="_o")


def cost_table(cells: pd.DataFrame) -> pd.DataFrame:
    """What every number cost: training (epochs charged, FLOPs, seconds, device) and inference (effective
    FLOPs, their share of the dense FLOPs, latency where measured), per method and target sparsity."""
    cells = _ordered(cells[cells["n"] > 0])
    out = pd.DataFrame({
        "method": cells["method"],
        "target": [_pct(t) if t > 0 else "0% (dense)" for t in cells["target_sparsity"]],
        "n": cells["n"].astype(int),
        "epochs charged": [_num(v, "{:.2f}") for v in cells["epochs_charged_mean"]],
        "train FLOPs": [_si(v, "FLOP") for v in cells["train_flops_mean"]],
        "train time (s)": [_num(v, "{:.1f}") for v in cells["train_seconds_mean"]],
        "inference FLOPs": [_si(v, "FLOP") for v in cells["flops_effective_mean"]],
        "% of dense FLOPs": [_num(100 * e / d, "{:.1f}") if d else MISSING
                             for e, d in zip(cells["flops_effective_mean"], cells["flops_dense_mean"])],
    })
    if cells["latency_ms_mean"].notna().any():
        out["latency (ms)"] = [_num(v, "{:.3f}") for v in cells["latency_ms_mean"]]
    out["device"] = cells["devices"].to_numpy()
    return out.reset_index(drop=True)


def sanity_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Achieved vs target sparsity, emptied layers and failures per method and target sparsity."""
    cells = _ordered(cells)
    return pd.DataFrame({
        "method": cells["method"],
        "target": [_pct(t) if t > 0 else "0% (dense)" for t in cells["target_sparsity"]],
        "finished": cells["n"].astype(int),
        "achieved sparsity": [_num(100 * v, "{:.2f}%") for v in cells["sparsity_mean"]],
        "max deviation (pp)": [_num(v, "{:.2f}") for v in cells["max_sparsity_error_pp"]],
        "off target (>0.5 pp)": [_flag(v) for v in cells["off_target"]],
        "trials with an emptied layer": [_flag(v) for v in cells["emptied_layer_trials"]],
        "FAILED/KILLED runs": [_failed(a, b) for a, b in zip(cells["n_failed"], cells["n_failed_unrecovered"])],
    }).reset_index(drop=True)


def _flag(count: float) -> str:
    return f"⚠ {int(count)}" if count else "0"


def _failed(total: int, unrecovered: int) -> str:
    if not total:
        return "0"
    rerun = total - unrecovered
    return f"⚠ {int(total)}" + (f" ({int(rerun)} rerun ok)" if rerun else "")


# ----------------------------------------------------------------------------------------- report

@dataclass
class Report:
    """Everything a report shows, computed once and rendered as Markdown, HTML and CSV."""

    suite: str
    metric: str
    cells: pd.DataFrame
    header: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)  # caption -> PNG file, filled by write_report

    @property
    def metric_label(self) -> str:
        return self.metric + _scale(self.metric)[1]

    def leaderboard_markdown(self) -> str:
        return leaderboard_markdown_table(self.cells, self.metric)

    def tidy_csv(self) -> pd.DataFrame:
        columns = ["method", "base_method", "budget_policy", "target_sparsity", "metric", "mean", "std", "n",
                   "ci_low", "ci_high", "best", "tied_with_best", "p_vs_best", "seeds", "n_failed"]
        columns += [f"{m}_mean" for m in COST_METRICS] + ["off_target", "emptied_layer_trials"]
        return _ordered(self.cells)[columns].reset_index(drop=True)


def build_report(runs: pd.DataFrame, suite: str, *, metric: str = "test_acc", budget_policy: str | None = None,
                 tracking_uri: str = "") -> Report:
    """A :class:`Report` from all trial runs of a suite (any status, as from ``load_runs(status=None)``)."""
    if runs.empty:
        raise BenchError(f"suite '{suite}' has no trial runs in {tracking_uri or 'the tracking store'}")
    prepared = prepare_runs(runs, metric, budget_policy)
    if prepared.empty:
        policies = ", ".join(sorted(_col(runs, "tags.budget_policy").dropna().astype(str).unique()))
        raise BenchError(f"suite '{suite}' has no trial runs with budget policy '{budget_policy}' "
                         f"(recorded policies: {policies or 'none'})")
    finished_all = prepared[prepared["status"] == "FINISHED"]
    failed = prepared[prepared["status"].isin(FAILED_STATUSES)]
    if finished_all.empty:
        raise BenchError(f"suite '{suite}' has no finished trial runs in {tracking_uri or 'the tracking store'} "
                         f"({len(failed)} FAILED/KILLED, {len(prepared) - len(failed)} unfinished)")
    if f"metrics.{metric}" not in runs or finished_all["value"].isna().all():
        known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise BenchError(f"metric '{metric}' was not logged by any finished run of suite '{suite}'; "
                         f"logged metrics: {', '.join(known)}")
    finished, superseded = latest_per_trial(finished_all)
    cells = cell_table(finished, failed, metric)
    report = Report(suite=suite, metric=metric, cells=cells,
                    header=_header(prepared, finished, suite, metric, budget_policy, tracking_uri))
    report.warnings = _warnings(prepared, finished, failed, runs, budget_policy)
    report.notes = _notes(cells, finished, superseded, len(prepared) - len(finished_all) - len(failed))
    return report


def _values(frame: pd.DataFrame, column: str) -> list[str]:
    return sorted(_col(frame, column).dropna().astype(str).unique())


def _header(prepared: pd.DataFrame, finished: pd.DataFrame, suite: str, metric: str, policy: str | None,
            uri: str) -> list[tuple[str, str]]:
    seeds = sorted(int(s) for s in finished["seed"].dropna().unique())
    epochs = sorted({f"{float(e):g}" for e in _values(finished, "params.suite.budget.epochs")}, key=float)
    versions = [f"{h} (result version {r})" for h, r in
                sorted(set(zip(_col(finished, "tags.harness_version").astype(str),
                               _col(finished, "tags.result_version").astype(str))))]
    return [
        ("Suite", suite),
        ("Data set / model", f"{', '.join(_values(finished, 'tags.dataset')) or '?'} / "
                             f"{', '.join(_values(finished, 'tags.model')) or '?'}"),
        ("Budget policy", ", ".join(_values(finished, "tags.budget_policy"))
         + (" (selected with --budget-policy)" if policy else "")),
        ("Budget (epochs)", ", ".join(epochs) or "?"),
        ("Seeds", f"{', '.join(map(str, seeds))} ({len(seeds)})"),
        ("Metric", f"{metric}: final model, test split; mean ± sample std (n seeds)"),
        ("Trial runs", f"{len(finished)} finished (latest per trial key), {len(prepared)} in the store"),
        ("Harness", ", ".join(versions)),
        ("PyTorch", ", ".join(_values(finished, "tags.torch_version"))),
        ("Devices", ", ".join(_values(finished, "tags.device"))),
        ("Git commits", ", ".join(_values(finished, "tags.git_commit"))),
        ("Tracking store", uri or "?"),
        ("Generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]


def _warnings(prepared: pd.DataFrame, finished: pd.DataFrame, failed: pd.DataFrame, runs: pd.DataFrame,
              policy: str | None) -> list[str]:
    out = []
    for tag, what in (("tags.harness_version", "harness versions"), ("tags.result_version", "result versions")):
        values = _values(finished, tag)
        if len(values) > 1:
            out.append(f"Runs mix {what} ({', '.join(values)}): numbers from different harness versions may "
                       "not be comparable.")
    policies = _values(finished, "tags.budget_policy")
    if len(policies) > 1:
        out.append(f"Runs mix budget policies ({', '.join(policies)}); rows are split by policy. Use "
                   "--budget-policy to report one.")
    _, differing = row_labels(prepared)
    differing = [d for d in differing if d != "budget_policy"]
    if differing:
        out.append(f"Runs differ in suite settings ({', '.join(differing)}); rows are split by them.")
    if len(failed):
        names = ", ".join(sorted(f"{r} @ {_pct(t) if t > 0 else 'dense'} seed {int(s) if not math.isnan(s) else '?'}"
                                 f" ({st})" for r, t, s, st in
                                 zip(failed["row"], failed["target"], failed["seed"], failed["status"])))
        out.append(f"{len(failed)} trial run(s) FAILED or were KILLED: {names}.")
    if policy:
        others = _values(runs[_col(runs, "tags.budget_policy") != policy], "tags.budget_policy")
        if others:
            n = int((_col(runs, "tags.budget_policy") != policy).sum())
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
    off = finished[(finished["target"] > 0)
                   & ((_col(finished, "metrics.sparsity") - finished["target"]).abs() > SPARSITY_TOLERANCE)]
    if len(off):
        out.append(_off_target_note(off))
    emptied = finished[_col(finished, "metrics.empty_layers").fillna(0) > 0]
    if len(emptied):
        items = ", ".join(f"{r} @ {_pct(t)} seed {int(s)} ({int(e)} layer(s))" for r, t, s, e in
                          zip(emptied["row"], emptied["target"], emptied["seed"], emptied["metrics.empty_layers"]))
        out.append(f"Trials that left a prunable layer without any weight (the network may be disconnected): {items}.")
    commits = _values(finished, "tags.git_commit")
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
        seeds = ", ".join(f"{int(s)} ({100 * a:.2f}%)" for s, a in zip(cell["seed"], cell["metrics.sparsity"]))
        items.append(f"{row} @ {_pct(target)}: seed {seeds}")
    text = f"Achieved sparsity off the target by more than {SPARSITY_TOLERANCE * 100:g} pp: {'; '.join(items)}."
    structured = sorted(m for m in off["method"].unique() if is_structured(m))
    if structured:
        text += (f" {', '.join(structured)} prune(s) whole channels, so the achieved sparsity (counted over all "
                 "conv and linear weights, like every method) can legitimately differ from the target; compare "
                 "them at their achieved sparsity (the plots use it).")
    return text


_KNOWN_STRUCTURED = {"network_slimming"}


def is_structured(method: str) -> bool:
    """Whether a method prunes whole structures (from its class when installed, else a known list)."""
    from importlib.metadata import entry_points

    try:
        for ep in entry_points(group="pruning_bench.methods"):
            if ep.name == method:
                return bool(getattr(ep.load(), "structured", False))
    except Exception:  # a broken plugin must not break the report
        pass
    return method in _KNOWN_STRUCTURED


# ---------------------------------------------------------------------------------------- writing

def parse_formats(value: str | None) -> list[str]:
    items = [v.strip().lower() for v in (value or ",".join(FORMATS)).split(",") if v.strip()]
    bad = [v for v in items if v not in FORMATS]
    if bad or not items:
        raise BenchError(f"--format: unknown format '{bad[0] if bad else value}'; valid: {', '.join(FORMATS)} "
                         "(comma-separated)")
    return list(dict.fromkeys(items))


def render_markdown(report: Report) -> str:
    lines = [f"# {report.suite}: pruning benchmark report", ""]
    lines += [f"- **{k}**: {v}" for k, v in report.header]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- ⚠ {w}" for w in report.warnings]
    lines += ["", f"## Leaderboard: {report.metric_label}", "", report.leaderboard_markdown(), "",
              LEGEND, "", f"Significance: {TEST_DESCRIPTION}"]
    if report.notes:
        lines += [""] + [f"- {n}" for n in report.notes]
    lines += ["", "## Cost", "", COST_LEGEND, "", cost_table(report.cells).to_markdown(index=False), "",
              "## Sanity checks", "", sanity_table(report.cells).to_markdown(index=False)]
    if report.plots:
        lines += ["", "## Plots", ""]
        for caption, path in report.plots.items():
            lines += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


LEGEND = ("Cells: mean ± sample std (n seeds) of the final model. **Bold ★** = best mean in the column "
          "(among rows of the same budget policy); "
          "≈ = statistically indistinguishable from the best; — = no run. The _dense_ row is the unpruned "
          "baseline (target sparsity 0), repeated in every column as a reference and not ranked.")
COST_LEGEND = ("Means over seeds. Epochs charged = training sample passes / training-set size (the budget "
               "meter); train FLOPs as charged by the meter; inference FLOPs = per-layer FLOPs "
               "(torch.utils.flop_counter, a multiply-add = 2) x per-layer density.")


def write_report(report: Report, out: Path, formats: list[str]) -> list[Path]:
    """Write the chosen formats (plots too for md/html) into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in formats or "html" in formats:
        from pruning_bench.report_plots import write_plots

        report.plots = write_plots(report.cells, out, metric=report.metric, label=report.metric_label,
                                   scale=_scale(report.metric)[0])
        written += list(report.plots.values())
    if "md" in formats:
        path = out / "report.md"
        path.write_text(render_markdown(report), encoding="utf-8")
        written.append(path)
    if "csv" in formats:
        path = out / "leaderboard.csv"
        report.tidy_csv().to_csv(path, index=False)
        written.append(path)
    if "html" in formats:
        from pruning_bench.report_html import render_html

        path = out / "report.html"
        path.write_text(render_html(report), encoding="utf-8")
        written.append(path)
    return written


def log_report_run(tracking_uri: str, report: Report, files: list[Path]) -> str:
    """Store the report files as artifacts of a "report" run (tagged ``report``; no ``trial_key``)."""
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(report.suite)
    if experiment is None:
        raise BenchError(f"no experiment '{report.suite}' in {tracking_uri}")
    tags = {"mlflow.runName": f"report {time.strftime('%Y-%m-%d %H:%M:%S')}", "report": "1",
            "suite": report.suite, "metric": report.metric}
    run = client.create_run(experiment.experiment_id, tags=tags)
    try:
        for path in files:
            client.log_artifact(run.info.run_id, str(path), artifact_path="report")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
