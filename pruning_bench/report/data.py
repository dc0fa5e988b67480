"""Report stage 1, load: trial runs from the tracking store (``mlflow.search_runs``) as one tidy table.

Reads nothing but MLflow, so runs from any machine that logged to the same store appear. Every run gets
its method, row label (method plus non-default parameters), target sparsity, seed, budget level
(policy, unit, multiple), outcome and the reported metric as ``value``. Nothing here imports a method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pruning_bench.errors import BenchError
from pruning_bench.tracking.store import quiet_mlflow, tracking_uri_scope

FAILED_STATUSES = ("FAILED", "KILLED")
FIT_LEVEL = "fit"  # pruning_bench.plan.fit.FIT (not imported: the report never imports the planning side)
# Suite parameters that do not change what a trial computes (where the data lives).
_IGNORED_PARAMS = ("params.suite.dataset.data_dir", "params.suite.dataset.download")
# The trial's budget level is a section of the report, not part of a row's label.
_LEVEL_PARAMS = ("tags.budget_policy", "params.budget_policy", "params.budget_unit", "params.budget_multiple")


def load_runs(tracking_uri: str, suite: str, *, status: str | None = "FINISHED") -> pd.DataFrame:
    """Trial runs (those with a ``trial_key`` tag) of a suite's experiment, one row per run."""
    quiet_mlflow()
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


def col(runs: pd.DataFrame, name: str, default: object = np.nan) -> pd.Series:
    """A column of ``runs``, or ``default`` everywhere when no run logged it (a metric added later)."""
    if name in runs:
        return runs[name] if default is np.nan else runs[name].fillna(default)
    return pd.Series(default, index=runs.index, dtype=float if default is np.nan else object)


def values(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-empty values of a column, as sorted strings."""
    return sorted(v for v in col(frame, column).dropna().astype(str).unique() if v != "")


def _differing(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if frame[c].dropna().astype(str).nunique() > 1]


def short(column: str) -> str:
    name = column.removeprefix("params.").removeprefix("tags.")
    return name.removeprefix("method.").removeprefix("suite.")


def row_labels(runs: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """A row label per run: the method name, plus its non-default parameters (the ``method_variant``
    tag; for runs without it, the method parameters in which the method's runs differ), plus the suite
    settings in which all runs differ. Returns the labels and those suite settings (for a warning)."""
    suite_cols = sorted(c for c in runs.columns if c.startswith("params.suite.")
                        and c not in _IGNORED_PARAMS and c not in _LEVEL_PARAMS)
    global_diff = _differing(runs, suite_cols)
    method_cols = sorted(c for c in runs.columns if c.startswith("params.method."))
    variants = col(runs, "tags.method_variant")
    labels = pd.Series("", index=runs.index, dtype=object)
    for method, group in runs.groupby("method", sort=False):
        tagged = variants[group.index].notna()
        method_diff = _differing(group[~tagged], method_cols) if (~tagged).any() else []
        for idx, run in group.iterrows():
            parts = [p for p in str(variants[idx]).split(", ") if p] if tagged[idx] else \
                [f"{short(c)}={run[c]}" for c in method_diff if isinstance(run[c], str)]
            parts += [f"{short(c)}={run[c]}" for c in global_diff if isinstance(run[c], str)]
            labels[idx] = f"{method} [{', '.join(parts)}]" if parts else str(method)
    return labels, [short(c) for c in global_diff]


def prepare_runs(runs: pd.DataFrame, metric: str, budget_policy: str | None = None) -> pd.DataFrame:
    """Normalise the search result: method, row, target, seed, level, outcome and the metric as ``value``.

    Runs recorded before budget levels existed count as the 1x level in the ``epochs`` unit; runs before
    outcome tags as ``finished`` (FINISHED) or ``failed``.
    """
    runs = runs.copy()
    if budget_policy:
        runs = runs[col(runs, "tags.budget_policy") == budget_policy]
    runs["method"] = runs["tags.method"].astype(str)
    runs["target"] = pd.to_numeric(runs["tags.target_sparsity"], errors="coerce").astype(float)
    runs["seed"] = pd.to_numeric(col(runs, "tags.seed"), errors="coerce")
    runs["value"] = pd.to_numeric(col(runs, f"metrics.{metric}"), errors="coerce").astype(float)
    runs["policy"] = col(runs, "tags.budget_policy", "equal").astype(str)
    runs["unit"] = col(runs, "tags.budget_unit", "epochs").astype(str)
    runs["multiple"] = pd.to_numeric(col(runs, "tags.budget_multiple", "1"), errors="coerce").fillna(1.0)
    finished = runs["status"] == "FINISHED" if "status" in runs else pd.Series(True, index=runs.index)
    runs["outcome"] = col(runs, "tags.outcome", "").astype(str).where(
        col(runs, "tags.outcome", "").astype(str) != "", np.where(finished, "finished", "failed"))
    runs["source"] = col(runs, "tags.control_source", "").fillna("").astype(str)  # a control's source method
    runs["structured"] = col(runs, "tags.structured", "0").astype(str) == "1"
    runs["granularity"] = col(runs, "tags.granularity", "").astype(str).where(
        col(runs, "tags.granularity", "").astype(str) != "", np.where(runs["structured"], "structured", "unstructured"))
    runs["row"], _ = row_labels(runs) if not runs.empty else (pd.Series(dtype=object), [])
    return runs.reset_index(drop=True)


def level_order(level: str) -> tuple[int, float]:
    """Reading order of budget levels: ``fit`` (the comparison at one identical budget) first, then the
    multiples ascending."""
    return (0, 0.0) if level == FIT_LEVEL else (1, float(level.removesuffix("x")))


def explode_levels(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, budget level it stands for), in column ``level``: the ``budget_level`` tag
    (``fit``, ``2x``, or ``2x,fit`` when a plan reused a 2x trial as its fit level), else the run's own
    multiple (``2x``). In the ``fit`` level each (policy, unit, column) keeps its largest fit multiple
    (the plan with the most methods), the dense baseline the runs at those multiples; other fit runs are
    shown in their numeric level."""
    own = [f"{m:g}x" for m in runs["multiple"]]
    tags = col(runs, "tags.budget_level", "").astype(str)
    runs = runs.assign(level=[[t for t in tag.split(",") if t] or [name]
                              for tag, name in zip(tags, own, strict=True)])
    runs = runs.explode("level").reset_index(drop=True)
    fit = runs["level"] == FIT_LEVEL
    if fit.any():
        top = runs[fit & (runs["target"] > 0)].groupby(["policy", "unit", "target"])["multiple"].max()
        per_level = {key: set(group) for key, group in top.groupby(level=[0, 1])}
        for idx in runs.index[fit]:
            policy, unit, target, multiple = runs.loc[idx, ["policy", "unit", "target", "multiple"]]
            wanted = {top[(policy, unit, target)]} if target > 0 else per_level.get((policy, unit), {multiple})
            if multiple not in wanted:
                runs.at[idx, "level"] = f"{multiple:g}x"
    ident = "run_id" if "run_id" in runs else "tags.trial_key"
    return runs.drop_duplicates(subset=[ident, "level"]).reset_index(drop=True)


def latest_per_trial(finished: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The latest finished run of every trial key (``--rerun`` makes several), and how many were dropped."""
    ordered = finished.sort_values("start_time") if "start_time" in finished else finished
    latest = ordered.drop_duplicates("tags.trial_key", keep="last")
    return latest.sort_index(), len(finished) - len(latest)
