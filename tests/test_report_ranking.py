"""How the report ranks and labels its cells: Welch's test, ties and summaries checked by hand, a real budget
ladder (a leaderboard per budget level, IMP's does-not-fit cells, the cost plan, compute-matched curves),
and, on synthetic MLflow-shaped runs, marks against the random baseline, best-of-one and thread warnings."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import bench, leaderboard_rows, uri_of

from pruning_bench.report.publish import build_report, leaderboards_markdown, load_runs
from pruning_bench.report.stats import rank_column, summarize, welch_p


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
