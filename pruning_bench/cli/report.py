"""``bench report``: the comparison report of one or more suites, built from their MLflow runs."""

from __future__ import annotations

from pathlib import Path

import click

from pruning_bench.cli.parsing import split_items
from pruning_bench.core.budget import POLICIES
from pruning_bench.errors import BenchError
from pruning_bench.plan.suite import builtin_suites, load_suite


@click.command()
@click.option("--suite", "suite_names", required=True, multiple=True,
              help="Suite (experiment) to report on; several: comma-separated or the option repeated.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Where the default MLflow store is and reports go.")
@click.option("--tracking-uri", help="MLflow tracking URI (default as for `bench run`).")
@click.option("--metric", default="test_acc", show_default=True,
              help="Metric to tabulate (any metric the trials logged, e.g. test_acc, val_acc, test_loss).")
@click.option("--budget-policy", type=click.Choice(POLICIES),
              help="Only runs of this budget policy (default: all; mixed policies are split and warned about).")
@click.option("--format", "formats", default="md,html,csv", show_default=True,
              help="Comma-separated outputs: md (report.md + PNG plots), html (one self-contained file), "
                   "csv (tidy leaderboard.csv).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for report files (default: <results-dir>/reports/<suite>; with several suites "
                   "<out>/<suite>).")
@click.option("--no-log", is_flag=True, help="Do not store the report as artifacts of a 'report' run in MLflow.")
def report(suite_names: tuple[str, ...], results_dir: Path, tracking_uri: str | None, metric: str,
           budget_policy: str | None, formats: str, out: Path | None, no_log: bool) -> None:
    """Build the comparison report of a suite from its MLflow runs: leaderboard (mean ± std over seeds,
    best and statistically tied cells marked), cost and sanity tables, plots; as Markdown, HTML and CSV.

    Example: bench report --suite mnist1d --budget-policy equal
    """
    from pruning_bench.report.publish import (
        build_report,
        leaderboards_markdown,
        load_runs,
        log_report_run,
        parse_formats,
        write_report,
    )
    from pruning_bench.tracking.store import check_server, default_tracking_uri

    uri = tracking_uri or default_tracking_uri(results_dir)
    kinds = parse_formats(formats)
    check_server(uri)
    names = [n for value in suite_names for n in split_items(value)]
    if not names:
        raise BenchError("--suite is empty; give a suite name, e.g. --suite mnist1d")
    names = list(dict.fromkeys(names))
    for raw in names:
        suite = load_suite(raw) if raw.endswith(".toml") or raw in builtin_suites() else None
        name = suite.name if suite else raw
        compare = [tuple(p) for p in suite.report.compare] if suite else None
        built = build_report(load_runs(uri, name, status=None), name, metric=metric, budget_policy=budget_policy,
                             tracking_uri=uri, compare=compare)
        target = (out / name if len(names) > 1 else out) if out else results_dir / "reports" / name
        files = write_report(built, target, kinds)
        click.echo(f"\n{name}: {built.metric_label}\n{leaderboards_markdown(built)}")
        for line in built.warnings:
            click.echo(f"warning: {line}", err=True)
        if not no_log:
            run_id = log_report_run(uri, built, files)
            click.echo(f"logged as artifacts of report run {run_id}", err=True)
        click.echo("written: " + ", ".join(str(f) for f in files), err=True)
