"""`bench report` on a real smoke sweep: statistics equal those computed from the runs, tables have the
expected shape, plots are real PNGs, the HTML is self-contained, failures and mixed policies are reported."""

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
from pruning_bench.report.stats import rank_column, summarize, welch_p

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


def test_welch_ties_and_summary_by_hand():
    a, b, c = [0.90, 0.91, 0.92], [0.50, 0.51, 0.52], [0.89, 0.92, 0.905]
    # Welch t by hand for a vs c.
    va, vc = np.var(a, ddof=1) / 3, np.var(c, ddof=1) / 3
    t = (np.mean(a) - np.mean(c)) / math.sqrt(va + vc)
    df = (va + vc) ** 2 / (va ** 2 / 2 + vc ** 2 / 2)
    assert welch_p(a, c) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    ranking = rank_column({"a": a, "b": b, "c": c})
    assert ranking.best == {"a": True, "b": False, "c": False}
    assert ranking.tied == {"a": False, "b": False, "c": True}
    assert rank_column({"a": [1.0, 1.0], "b": [1.0, 1.0]}).best == {"a": True, "b": True}
    assert rank_column({"a": [0.9], "b": [0.8]}).tied == {"a": False, "b": False}  # one seed: untestable
    assert rank_column({"loss1": [0.2, 0.3], "loss2": [2.0, 2.1]}, higher=False).best["loss1"]
    s = summarize([0.9])
    assert s.n == 1 and math.isnan(s.std) and math.isnan(s.ci_low)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """A smoke sweep over two budget levels with an IMP variant: IMP does not fit at 1x, runs at 10x."""
    root = tmp_path_factory.mktemp("ladder")
    result = bench("run", "--suite", "smoke", "--methods", "dense,snip,imp,imp[prune_fraction=0.5]",
                   "--sparsities", "0.8", "--budgets", "1,10", "--results-dir", str(root), "--no-progress")
    assert result.exit_code == 0, result.output
    out = root / "report"
    result = bench("report", "--suite", "smoke", "--results-dir", str(root), "--out", str(out), "--no-log")
    assert result.exit_code == 0, result.output
    return root, out


def test_each_budget_level_has_its_leaderboard_and_does_not_fit_cells_say_what_they_need(ladder):
    root, out = ladder
    text = (out / "report.md").read_text()
    one, ten = text.split("## Leaderboard")[1:3]
    assert one.startswith(": test_acc (%), equal budget, 1x (4 epochs)")
    assert ten.startswith(": test_acc (%), equal budget, 10x (40 epochs)")
    rows_1x = {r[0]: r for r in leaderboard_rows("## Leaderboard" + one)}
    rows_10x = {r[0]: r for r in leaderboard_rows("## Leaderboard" + ten)}
    # labels carry the parameters that differ from the suite's defaults (the variant's prune fraction), not
    # the suite's own [method_params] (its rewind point)
    assert set(rows_1x) >= {"dense", "snip", "imp", "imp [prune_fraction=0.5]"}
    runs = load_runs(uri_of(root), "smoke")
    imp_1x = runs[(runs["tags.method"] == "imp") & (runs["tags.method_variant"].fillna("") == "")
                  & (runs["tags.budget_multiple"] == "1")]
    need = imp_1x["metrics.min_budget_epochs"].iloc[0] / 4
    cell = rows_1x["imp"][1]
    shown = float(re.search(r"needs ≥ ([\d.]+)×", cell).group(1))
    assert shown >= need and shown - need < 0.1 and "0.00" not in cell  # never 0, never blank
    assert re.search(r"\d+\.\d\d \(1\)", rows_10x["imp"][1])  # it ran at 10x
    csv = pd.read_csv(out / "leaderboard.csv").set_index(["budget_multiple", "method", "target_sparsity"])
    dnf = csv.loc[(1.0, "imp", 0.8)]
    assert dnf["n"] == 0 and dnf["n_does_not_fit"] == 1 and dnf["min_budget_multiple"] == pytest.approx(need)
    assert csv.loc[(10.0, "imp", 0.8), "plan_rounds_mean"] == 8
    html = (out / "report.html").read_text()
    assert '<td class="dnf">needs ≥' in html


def test_cost_table_shows_the_plan_and_curves_are_drawn_per_sparsity(ladder):
    _, out = ladder
    text = (out / "report.md").read_text()
    cost = text.split("## Cost")[1].split("## Sanity")[0]
    imp_row = [line for line in cost.splitlines() if "equal 10x" in line and re.search(r"\| +imp \|", line)][0]
    assert re.search(r"\| +9 x [\d.]+ ep \|", imp_row)  # 9 rounds x round length (1 particle)
    assert "## Compute-matched curves" in text and "test_acc_vs_budget_equal_epochs_0800.png" in text
    assert (out / "test_acc_vs_budget_equal_epochs_0800.png").stat().st_size > 10_000
    assert "Smallest budget that fits: imp" in text


def synthetic_runs(cells: dict[tuple[str, float], list[float]], achieved: dict[str, float] | None = None):
    """MLflow-shaped finished runs: one per (method, target) value, seeds 0.., sparsity = target unless
    ``achieved`` fixes a method's."""
    rows = []
    for (method, target), accs in cells.items():
        for seed, acc in enumerate(accs):
            rows.append({"status": "FINISHED", "tags.trial_key": f"{method}-{target}-{seed}", "tags.method": method,
                         "tags.target_sparsity": str(target), "tags.seed": str(seed), "metrics.test_acc": acc,
                         "metrics.sparsity": (achieved or {}).get(method, target), "start_time": seed})
    return pd.DataFrame(rows)


def test_methods_are_marked_against_the_random_baseline_of_their_cell():
    random = [0.80, 0.81, 0.82]
    runs = synthetic_runs({("dense", 0.0): [0.95, 0.96, 0.97], ("random", 0.9): random,
                           ("good", 0.9): [0.90, 0.91, 0.92],      # clearly above random
                           ("same", 0.9): [0.805, 0.815, 0.80],     # indistinguishable (Welch p >= 0.05)
                           ("bad", 0.9): [0.60, 0.61, 0.62],        # clearly below
                           ("nm", 0.9): [0.50, 0.51, 0.52]},        # missed its target: never compared
                          achieved={"nm": 0.5})
    report = build_report(runs, "synthetic")
    marks = report.cells.set_index("method")["vs_random"].to_dict()
    assert stats.ttest_ind([0.805, 0.815, 0.80], random, equal_var=False).pvalue >= 0.05
    assert marks == {"dense": "", "random": "", "good": "above", "same": "tied", "bad": "below", "nm": ""}
    lines = [line for line in leaderboards_markdown(report).splitlines() if line.startswith("|")]
    rows = {cells[0]: cells[1] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}
    assert rows["same"].endswith("(3; n.s. vs random)") and rows["bad"].endswith("(3; < random)")
    assert "random" not in rows["good"] and "random" not in rows["nm"]
    note = [n for n in report.notes if "random-pruning baseline" in n][0]
    assert "same @ 90% 1x: indistinguishable from random" in note and "bad @ 90% 1x: below random" in note


def test_no_random_row_means_no_marks():
    report = build_report(synthetic_runs({("good", 0.9): [0.9, 0.91], ("bad", 0.9): [0.6, 0.61]}), "synthetic")
    assert (report.cells["vs_random"] == "").all()
    assert not any("random-pruning baseline" in n for n in report.notes)


def test_a_row_alone_in_its_column_is_not_marked_best():
    report = build_report(synthetic_runs({("a", 0.9): [0.8, 0.81], ("b", 0.9): [0.7, 0.72],
                                          ("nm", 0.5): [0.9, 0.91]}), "synthetic")
    best = report.cells.set_index("method")["best"].to_dict()
    assert best == {"a": True, "b": False, "nm": False}


def test_cpu_runs_on_different_thread_counts_are_warned_about():
    runs = synthetic_runs({("a", 0.9): [0.8, 0.81], ("b", 0.9): [0.7, 0.72]})
    runs["tags.device"] = ["cpu (1 threads)", "cpu (1 threads)", "cpu (2 threads)", "cpu (2 threads)"]
    runs["tags.threads"] = ["1", "1", "2", "2"]
    assert any("different torch thread counts (1, 2)" in w for w in build_report(runs, "synthetic").warnings)
    runs["tags.threads"] = "2"
    assert not any("thread counts" in w for w in build_report(runs, "synthetic").warnings)
