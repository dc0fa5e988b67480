"""`bench report` on a real smoke sweep: statistics equal those computed from the runs, tables have the
expected shape, plots are real PNGs, the HTML is self-contained, the report is logged, one seed and missing
cells are shown as such, failures and mixed policies are reported, bad options are one-line errors."""

from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from pruning_bench.cli import main
from pruning_bench.errors import BenchError
from pruning_bench.report.publish import MISSING, build_report, cost_table, leaderboards_markdown, load_runs

METHODS = ["dense", "global_magnitude", "snip"]


def bench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def uri_of(root) -> str:
    return f"sqlite:///{root}/mlflow.db"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real smoke sweep: 3 methods x 2 sparsities x 2 seeds (dense once per seed), 1 epoch each."""
    root = tmp_path_factory.mktemp("report_store")
    result = bench("run", "--suite", "smoke", "--methods", ",".join(METHODS), "--sparsities", "0.5,0.8",
                   "--seeds", "0,1", "--epochs", "1", "--results-dir", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def report_dir(store):
    out = store / "report"
    result = bench("report", "--suite", "smoke", "--results-dir", str(store), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def leaderboard_rows(markdown: str) -> list[list[str]]:
    section = markdown.split("## Leaderboard")[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]


def test_csv_statistics_equal_those_from_the_runs(store, report_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri_of(store))
    experiment = client.get_experiment_by_name("smoke")
    values: dict[tuple[str, float], list[float]] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        tags = run.data.tags
        if "trial_key" in tags and run.info.status == "FINISHED":
            key = (tags["method"], float(tags["target_sparsity"]))
            values.setdefault(key, []).append(run.data.metrics["test_acc"])
    assert sorted(values) == [("dense", 0.0), ("global_magnitude", 0.5), ("global_magnitude", 0.8),
                              ("snip", 0.5), ("snip", 0.8)]
    csv = pd.read_csv(report_dir / "leaderboard.csv")
    assert len(csv) == len(values)
    for row in csv.itertuples():
        accs = np.array(values[(row.method, row.target_sparsity)])
        assert row.n == len(accs) == 2
        assert row.mean == pytest.approx(accs.mean(), abs=1e-12)
        assert row.std == pytest.approx(accs.std(ddof=1), abs=1e-12)
        half = stats.t.ppf(0.975, 1) * accs.std(ddof=1) / math.sqrt(2)
        assert (row.ci_low, row.ci_high) == pytest.approx((accs.mean() - half, accs.mean() + half), abs=1e-12)
    for target in (0.5, 0.8):  # exactly one best per sparsity column, dense never ranked
        assert csv[csv.target_sparsity == target]["best"].sum() == 1
    assert not csv[csv.method == "dense"]["best"].any()


def test_markdown_leaderboard_has_the_expected_rows_and_columns(report_dir):
    text = (report_dir / "report.md").read_text()
    rows = leaderboard_rows(text)
    assert rows[0] == ["method \\ target sparsity", "50%", "80%"]
    assert [r[0] for r in rows[2:-1]] == METHODS  # dense first
    dense = rows[2]
    assert dense[1] == dense[2] and dense[1].startswith("_")  # the reference, repeated, not ranked
    resolution = rows[-1]  # what Welch's test can resolve in each column, with its seeds
    assert resolution[0] == "smallest significant difference"
    assert all(re.fullmatch(r"_≥ \d+\.\d\d \(2 seeds\)_", c) for c in resolution[1:])
    for col in (1, 2):
        cells = [r[col] for r in rows[3:-1]]
        assert sum("★" in c for c in cells) >= 1
        assert all(re.search(r"\d+\.\d\d ± \d+\.\d\d \(2\)", c) for c in cells)
    for heading in ("## Cost", "## Sanity checks", "Welch", "Git commits", "harness", "Seeds**: 0, 1 (2)"):
        assert heading.lower() in text.lower(), heading


def test_plots_are_valid_pngs(report_dir):
    import matplotlib.image

    pngs = sorted(report_dir.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.01  # not a blank canvas


def test_html_is_self_contained_with_embedded_plots(report_dir):
    html = (report_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    for forbidden in ("http", 'src="http', "<link", "<script", "@import", "url("):
        assert forbidden not in without_images, forbidden
    assert "<table>" in html and "global_magnitude" in html


def test_report_is_logged_as_a_non_trial_run(store, report_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri_of(store))
    experiment = client.get_experiment_by_name("smoke")
    reports = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
               if r.data.tags.get("report") == "1"]
    assert reports and all("trial_key" not in r.data.tags for r in reports)
    names = {a.path for a in client.list_artifacts(reports[-1].info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/leaderboard.csv"} <= names
    assert len(load_runs(uri_of(store), "smoke")) == 10  # the report run is not counted as a trial


def test_one_seed_has_no_std_and_says_so(store):
    runs = load_runs(uri_of(store), "smoke", status=None)
    report = build_report(runs[runs["tags.seed"] == "0"], "smoke")
    table = leaderboards_markdown(report)
    assert "±" not in table and "(1)" in table
    assert any("Only one seed" in n for n in report.notes)
    assert not report.cells["tied_with_best"].any()


def test_missing_cells_and_metrics_are_missing_not_zero(store):
    runs = load_runs(uri_of(store), "smoke", status=None)
    runs = runs[~((runs["tags.method"] == "snip") & (runs["tags.target_sparsity"] == "0.8"))].copy()
    runs["metrics.latency_ms"] = np.where(runs["tags.method"] == "snip", 1.5, np.nan)  # logged by snip only
    report = build_report(runs, "smoke")
    snip = [line for line in leaderboards_markdown(report).splitlines() if line.startswith("| snip")][0]
    assert snip.rstrip(" |").endswith(MISSING)
    costs = cost_table(report.cells).set_index(["method", "target"])
    assert costs.loc[("snip", "50%"), "latency (ms)"] == "1.500"
    assert costs.loc[("dense", "0% (dense)"), "latency (ms)"] == MISSING


@pytest.fixture(scope="module")
def mixed_store(store, tmp_path_factory):
    """The smoke store plus a FAILED snip trial (seed 2, no finished rerun) and a native-policy run."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mixed_store")
    shutil.copy(store / "mlflow.db", root / "mlflow.db")
    client = MlflowClient(uri_of(root))
    experiment_id = client.get_experiment_by_name("smoke").experiment_id
    base = {"suite": "smoke", "harness_version": "0.1.0", "result_version": "1", "model": "smoke_cnn",
            "dataset": "smoke", "device": "cpu", "torch_version": "x", "git_commit": "abc"}
    failed = client.create_run(experiment_id, tags={**base, "trial_key": "failedkey", "method": "snip",
                                                    "target_sparsity": "0.8", "seed": "2", "budget_policy": "equal"})
    client.set_terminated(failed.info.run_id, "FAILED")
    native = client.create_run(experiment_id, tags={**base, "trial_key": "nativekey", "method": "global_magnitude",
                                                    "target_sparsity": "0.5", "seed": "0", "budget_policy": "native"})
    client.log_param(native.info.run_id, "budget_policy", "native")
    for key, value in {"test_acc": 0.5, "sparsity": 0.5, "epochs_charged": 2.0, "train_flops": 2e7,
                       "flops_effective": 7000.0, "flops_dense": 13952.0, "train_seconds": 1.0,
                       "empty_layers": 0.0}.items():
        client.log_metric(native.info.run_id, key, value)
    client.set_terminated(native.info.run_id, "FINISHED")
    return root


def test_failed_runs_are_counted_and_mixed_policies_warned(mixed_store):
    out = mixed_store / "all"
    result = bench("report", "--suite", "smoke", "--results-dir", str(mixed_store), "--out", str(out), "--no-log")
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    warnings = text.split("## Warnings")[1].split("## Leaderboard")[0]
    assert "mix budget policies (equal, native)" in warnings
    assert "1 trial run(s) FAILED" in warnings and "snip @ 80% 1x seed 2 (FAILED)" in warnings
    equal, native = text.split("## Leaderboard")[1:3]  # each policy has its own leaderboard
    assert equal.startswith(": test_acc (%), equal budget, 1x") and native.startswith(": test_acc (%), native")
    rows = {r[0]: r for r in leaderboard_rows("## Leaderboard" + equal)}
    assert "(2; 1 failed)" in rows["snip"][2]
    native_rows = {r[0]: r for r in leaderboard_rows("## Leaderboard" + native)}
    assert list(native_rows)[2:] == ["global_magnitude"]  # methods are ranked against their own policy only
    assert native_rows["global_magnitude"][1] == "50.00 (1)"  # alone at its level: not "best" of one
    csv = pd.read_csv(out / "leaderboard.csv").set_index(["policy", "method", "target_sparsity"])
    assert csv.loc[("equal", "snip", 0.8), "n_failed"] == 1
    assert csv.loc[("equal", "snip", 0.8), "n"] == 2
    sanity = text.split("## Sanity checks")[1]
    assert "⚠ 1" in sanity


def test_budget_policy_filter_keeps_failures_and_says_what_it_left_out(mixed_store):
    out = mixed_store / "equal"
    result = bench("report", "--suite", "smoke", "--results-dir", str(mixed_store), "--out", str(out),
                   "--budget-policy", "equal", "--format", "md", "--no-log")
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert "1 run(s) with other budget policies (native) are left out" in text
    assert "1 trial run(s) FAILED" in text
    assert [r[0] for r in leaderboard_rows(text)[2:-1]] == METHODS
    assert not (out / "report.html").exists() and not (out / "leaderboard.csv").exists()


def test_zero_runs_and_bad_options_exit_2(store, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri_of(store))
    if client.get_experiment_by_name("empty") is None:
        client.create_experiment("empty")
    for args, message in [
        (["--suite", "empty"], "suite 'empty' has no trial runs"),
        (["--suite", "smoke", "--format", "pdf"], "--format: unknown format 'pdf'"),
        (["--suite", "smoke", "--metric", "nope"], "metric 'nope' was not logged"),
    ]:
        result = CliRunner().invoke(main, ["report", *args, "--results-dir", str(store), "--out", str(tmp_path)])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0], result.output
    with pytest.raises(BenchError):
        build_report(pd.DataFrame(), "smoke")
