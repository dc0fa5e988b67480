"""Findings first: the statistics behind them checked against their definitions, and a real fit-level
smoke sweep whose report opens with them and lays the fit level out per column."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from pruning_bench.cli import main
from pruning_bench.report.publish import load_runs
from pruning_bench.report.stats import resolvable_difference, seeds_to_resolve, welch_difference, welch_p


def bench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_difference_of_exactly_the_resolvable_size_sits_at_p_005():
    for n, sd in ((3, 0.5), (5, 1.3), (10, 0.2)):
        base = np.linspace(-1, 1, n)
        base = base / base.std(ddof=1) * sd  # n values with sample sd exactly ``sd``
        gap = resolvable_difference(sd, n)
        assert welch_p(base + gap, base) == pytest.approx(0.05, abs=1e-9)
        assert welch_p(base + 0.9 * gap, base) > 0.05 > welch_p(base + 1.1 * gap, base)


def test_seeds_to_resolve_is_the_first_n_that_resolves():
    n = seeds_to_resolve(1.0, 0.8)
    assert resolvable_difference(0.8, n) <= 1.0 < resolvable_difference(0.8, n - 1)
    assert seeds_to_resolve(1.0, 0.0) == 2 and math.isnan(resolvable_difference(1.0, 1))


def test_the_interval_excludes_zero_exactly_when_p_is_below_005():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.normal(0, 1, rng.integers(2, 8))
        b = rng.normal(rng.normal(0, 1.5), rng.uniform(0.2, 2), rng.integers(2, 8))
        d = welch_difference(a, b)
        assert d.diff == pytest.approx(a.mean() - b.mean())
        assert d.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert (d.low > 0 or d.high < 0) == (d.p < 0.05)


@pytest.fixture(scope="module")
def fit_sweep(tmp_path_factory):
    """dense, random, snip, imp, swamp at the fit level of two columns (4.8x at 50%, 8.5x at 80%), 3 seeds."""
    root = tmp_path_factory.mktemp("fit_store")
    run = bench("run", "--suite", "smoke", "--methods", "dense,random,snip,imp,swamp", "--sparsities", "0.5,0.8",
                "--seeds", "0-2", "--budgets", "fit", "--threads", "1", "--no-progress", "--results-dir", str(root))
    assert run.exit_code == 0, run.output
    report = bench("report", "--suite", "smoke", "--results-dir", str(root), "--no-log")
    assert report.exit_code == 0, report.output
    return root, run.output, (root / "reports" / "smoke" / "report.md").read_text()


def test_every_fit_trial_of_a_column_finished_with_one_identical_budget(fit_sweep):
    root, _, _ = fit_sweep
    runs = load_runs(f"sqlite:///{root}/mlflow.db", "smoke")
    assert set(runs["tags.outcome"]) == {"finished"} and set(runs["tags.budget_level"]) == {"fit"}
    pruned = runs[runs["tags.target_sparsity"] != "0"]
    budgets = pruned.groupby("tags.target_sparsity")["metrics.budget_epochs"].unique()
    assert {k: list(v) for k, v in budgets.items()} == {"0.5": [19.2], "0.8": [34.0]}
    dense = runs[runs["tags.method"] == "dense"]
    assert sorted(dense["metrics.budget_epochs"].unique()) == [19.2, 34.0]


def test_the_report_opens_with_findings_and_names_each_columns_multiple(fit_sweep):
    _, _, text = fit_sweep
    assert text.index("## Findings") < text.index("## Leaderboard")
    findings = text.split("## Findings")[1].split("## Leaderboard")[0]
    assert "**equal budget, fit: 4.8x at 50%, 8.5x at 80%" in findings
    for column in ("50% sparsity**", "80% sparsity**"):
        block = findings.split(column)[1].split("**")[0]
        assert re.search(r"- Best: \w+ \d+\.\d\d ± \d+\.\d\d \(3 seeds\)", block)
        assert re.search(r"- swamp − imp: [+-]\d+\.\d\d points \(95% CI [+-]\d+\.\d\d to [+-]\d+\.\d\d\), "
                         r"p = \d\.\d{3}: (not )?significant at p < 0.05\.", block)
        assert re.search(r"- No better than random pruning \(random \d+\.\d\d\): (\w+ \([+-]\d+\.\d\d points, "
                         r"p = \d\.\d\d: (indistinguishable|significantly below)\)(, )?)+\.", block)
        assert re.search(r"- Resolution: with 3 seeds per row and the spread measured here \(pooled sd "
                         r"\d+\.\d\d points\), differences of at least \d+\.\d\d points reach p < 0.05", block)
    board = text.split("## Leaderboard")[1]
    assert board.startswith(": test_acc (%), equal budget, fit: 4.8x at 50%, 8.5x at 80%")
    assert "| 50% (fit = 4.8×) |" in board.replace("  ", "").replace("| ", "|").replace("|", "| ") or \
        "50% (fit = 4.8×)" in board.split("\n\n")[1].splitlines()[0]
    assert "80% (fit = 8.5×)" in board.split("\n\n")[1].splitlines()[0]


def test_the_findings_numbers_are_the_cells_numbers(fit_sweep):
    root, _, text = fit_sweep
    runs = load_runs(f"sqlite:///{root}/mlflow.db", "smoke")
    at = runs[runs["tags.target_sparsity"] == "0.8"]
    swamp = at[at["tags.method"] == "swamp"].sort_values("tags.seed")["metrics.test_acc"].to_numpy()
    imp = at[at["tags.method"] == "imp"].sort_values("tags.seed")["metrics.test_acc"].to_numpy()
    diff = 100 * (swamp.mean() - imp.mean())
    block = text.split("80% sparsity**")[1]
    shown = re.search(r"swamp − imp: ([+-]\d+\.\d\d) points", block)
    assert float(shown.group(1)) == pytest.approx(diff, abs=0.006)
    p = re.search(r"p = (\d\.\d{3})", block.split("swamp − imp")[1])
    expected = welch_p(swamp, imp)
    assert float(p.group(1)) == pytest.approx(expected if not math.isnan(expected) else 1.0, abs=6e-4)


def test_bench_run_prints_the_leaderboard_and_the_findings(fit_sweep):
    _, output, _ = fit_sweep
    assert "equal budget, fit: 4.8x at 50%, 8.5x at 80%" in output
    assert "Findings:" in output and "- swamp − imp:" in output and "- Resolution:" in output


def test_a_finished_fit_trial_reused_as_a_numeric_level_joins_that_level(fit_sweep):
    root, _, _ = fit_sweep
    again = bench("run", "--suite", "smoke", "--methods", "snip", "--sparsities", "0.8", "--seeds", "0-2",
                  "--budgets", "8.5", "--threads", "1", "--no-progress", "--results-dir", str(root))
    assert again.exit_code == 0 and "Nothing to run" in again.output
    runs = load_runs(f"sqlite:///{root}/mlflow.db", "smoke")
    snip = runs[(runs["tags.method"] == "snip") & (runs["tags.target_sparsity"] == "0.8")]
    assert set(snip["tags.budget_level"]) == {"8.5x,fit"}
    assert "equal budget, 8.5x (34 epochs)" in again.output
