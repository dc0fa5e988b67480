"""Reports from the tracking store, in one direction: load (:mod:`~pruning_bench.report.data`,
``mlflow.search_runs`` -> pandas) -> aggregate (:mod:`~pruning_bench.report.cells`: one cell per budget
level, method and sparsity; :mod:`~pruning_bench.report.summary`: header, warnings, notes;
:mod:`~pruning_bench.report.findings`: the findings that open the report) -> lay out
(:mod:`~pruning_bench.report.layout`: leaderboards, cost and sanity tables as a plain document) and render
(:mod:`~pruning_bench.report.markdown` for Markdown, :mod:`~pruning_bench.report.html` for HTML,
:mod:`~pruning_bench.report.plots` for the PNGs). This module writes the files and stores them as
artifacts of a "report" run (tagged ``report``, no ``trial_key``, so it is never mistaken for a trial).

Rows are methods, split into variants by their non-default parameters (e.g. ``imp [prune_fraction=0.5]``)
and by suite settings that differ, so different experiments are never averaged together; each budget
level (policy, unit, multiple) has its own leaderboard.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pruning_bench.errors import BenchError
from pruning_bench.report.cells import cell_table, scale_of
from pruning_bench.report.cost import cost_table
from pruning_bench.report.data import latest_per_trial, load_runs, prepare_runs
from pruning_bench.report.document import MISSING
from pruning_bench.report.findings import DEFAULT_COMPARE
from pruning_bench.report.layout import document
from pruning_bench.report.markdown import leaderboards_markdown, render_markdown
from pruning_bench.report.summary import Report, build_report
from pruning_bench.tracking.store import quiet_mlflow, warn_local_artifacts

FORMATS = ("md", "html", "csv")

__all__ = ["FORMATS", "MISSING", "Report", "build_report", "cost_table", "leaderboard_markdown",
           "leaderboards_markdown", "load_runs", "log_report_run", "parse_formats", "write_report"]


def parse_formats(value: str | None) -> list[str]:
    items = [v.strip().lower() for v in (value or ",".join(FORMATS)).split(",") if v.strip()]
    bad = [v for v in items if v not in FORMATS]
    if bad or not items:
        raise BenchError(f"--format: unknown format '{bad[0] if bad else value}'; valid: {', '.join(FORMATS)} "
                         "(comma-separated)")
    return list(dict.fromkeys(items))


def leaderboard_markdown(runs: pd.DataFrame, metric: str = "test_acc",
                         compare: list[tuple[str, str]] | None = None) -> str:
    """Each budget level's leaderboard of finished trial runs (as from :func:`load_runs`) and the
    findings, for the terminal at the end of ``bench run``."""
    prepared = prepare_runs(runs, metric)
    latest, _ = latest_per_trial(prepared)
    report = Report(suite="", metric=metric, cells=cell_table(latest, prepared.iloc[0:0], metric), header=[],
                    compare=list(compare or DEFAULT_COMPARE))
    return leaderboards_markdown(report)


def write_report(report: Report, out: Path, formats: list[str]) -> list[Path]:
    """Write the chosen formats (plots too for md/html) into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    plots: dict[str, Path] = {}
    if "md" in formats or "html" in formats:
        from pruning_bench.report.plots import write_plots

        plots = write_plots(report.cells, out, metric=report.metric, label=report.metric_label,
                            scale=scale_of(report.metric)[0])
        written += list(plots.values())
    doc = document(report, plots)
    if "md" in formats:
        path = out / "report.md"
        path.write_text(render_markdown(doc), encoding="utf-8")
        written.append(path)
    if "csv" in formats:
        path = out / "leaderboard.csv"
        report.tidy_csv().to_csv(path, index=False)
        written.append(path)
    if "html" in formats:
        from pruning_bench.report.html import render_html

        path = out / "report.html"
        path.write_text(render_html(doc), encoding="utf-8")
        written.append(path)
    return written


def log_report_run(tracking_uri: str, report: Report, files: list[Path]) -> str:
    """Store the report files as artifacts of a "report" run (tagged ``report``; no ``trial_key``)."""
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(report.suite)
    if experiment is None:
        raise BenchError(f"no experiment '{report.suite}' in {tracking_uri}")
    warn_local_artifacts(tracking_uri, experiment)  # artifacts go where the experiment's runs keep them
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
