"""Reports from the tracking store: ``mlflow.search_runs`` -> pandas -> leaderboard tables.

The report reads nothing but MLflow, so runs from any machine that logged to the same store appear.
"""

from __future__ import annotations

import pandas as pd

from pruning_bench.errors import BenchError
from pruning_bench.tracking import _quiet_mlflow


def load_runs(tracking_uri: str, suite: str, *, status: str | None = "FINISHED") -> pd.DataFrame:
    """Trial runs (those with a ``trial_key`` tag) of a suite's experiment, one row per run."""
    _quiet_mlflow()
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(suite) is None:
        raise BenchError(f"no runs recorded for suite '{suite}' in {tracking_uri}; run `bench run --suite {suite}` first")
    filters = ["tags.trial_key != ''"]
    if status:
        filters.append(f"attributes.status = '{status}'")
    runs = mlflow.search_runs(experiment_names=[suite], filter_string=" and ".join(filters),
                              output_format="pandas", max_results=100_000)
    return runs


def leaderboard(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows = methods (dense first), columns = target sparsities, cells = 'mean ± std (n)' in percent."""
    col = f"metrics.{metric}"
    if runs.empty or col not in runs:
        raise BenchError(f"no finished runs with metric '{metric}' to report")
    df = pd.DataFrame({
        "method": runs["tags.method"],
        "sparsity": runs["tags.target_sparsity"].astype(float),
        "value": runs[col].astype(float) * (100.0 if metric.endswith("acc") else 1.0),
    })
    stats = df.groupby(["method", "sparsity"])["value"].agg(["mean", "std", "count"]).reset_index()

    def cell(row: pd.Series) -> str:
        std = "n/a" if row["count"] < 2 else f"{row['std']:.2f}"
        return f"{row['mean']:.2f} ± {std} ({int(row['count'])})"

    stats["cell"] = stats.apply(cell, axis=1)
    table = stats.pivot(index="method", columns="sparsity", values="cell")
    order = sorted(table.index, key=lambda m: (m != "dense", m))
    table = table.loc[order]
    table.columns = ["dense" if s == 0 else f"{s:g}" for s in table.columns]
    return table.fillna("—")


def leaderboard_markdown(runs: pd.DataFrame, metric: str = "test_acc") -> str:
    table = leaderboard(runs, metric)
    return table.reset_index().rename(columns={"method": "method \\ sparsity"}).to_markdown(index=False)
