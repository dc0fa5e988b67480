"""Controls in a plan: each linked to its source's trial, run after it under every executor, marked
against it in the report, and a clear outcome when the source did not finish."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner
from pruning_bench.methods.dense import Dense
from pruning_bench.methods.imp import IMP
from pruning_bench.methods.reinit import Reinit
from pruning_bench.methods.shuffle import Shuffle

from pruning_bench.cli import main
from pruning_bench.errors import BenchError
from pruning_bench.plan.suite import load_suite
from pruning_bench.plan.trial import MethodSpec, Trial, build_plan
from pruning_bench.report.publish import load_runs

SMOKE_PLAN = "imp,reinit[source=imp],shuffle[source=imp],network_slimming,scratch[source=network_slimming]"


def _plan(*specs, sparsities=(0.5, 0.8), seeds=(0, 1), multiples=(1,)):
    return build_plan(load_suite("smoke"), list(specs), list(sparsities), list(seeds), "equal", multiples=list(multiples))


def test_a_control_is_planned_after_its_source_with_the_source_trials_key():
    plan = _plan(MethodSpec(Reinit, {"source": "imp"}), MethodSpec(Shuffle, {"source": "imp"}), IMP)
    methods = [t.method for t in plan]
    assert methods.index("reinit") > max(i for i, m in enumerate(methods) if m == "imp")
    sources = {(t.target_sparsity, t.seed): t.key for t in plan if t.method == "imp"}
    controls = [t for t in plan if t.method != "imp"]
    assert len(controls) == 8 and all(t.source_key == sources[(t.target_sparsity, t.seed)] for t in controls)
    alone = Trial(**{**controls[0].__dict__, "source_key": ""})
    assert alone.key != controls[0].key  # the source is part of the control's identity


def test_a_control_without_its_source_or_with_a_source_that_does_not_prune_is_a_clear_error():
    with pytest.raises(BenchError, match="its source 'imp' is not in the plan; add it to --methods"):
        _plan(MethodSpec(Reinit, {"source": "imp"}))
    with pytest.raises(BenchError, match="'dense' is a method that does not prune"):
        _plan(MethodSpec(Reinit, {"source": "dense"}), Dense)
    suite = dataclasses.replace(load_suite("smoke"), method_params={"reinit": {"source": "imp"}})
    with pytest.raises(BenchError, match="'reinit' is a control itself"):  # reinit's suite default: source=imp
        build_plan(suite, [MethodSpec(Shuffle, {"source": "reinit"}), IMP, Reinit], [0.5], [0], "equal")
    bad = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods", "reinit[source=nope]", "--dry-run"])
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output


def _store(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def _ran_after_sources(runs) -> None:
    """Every control's run started after its source's run ended, and used that run."""
    by_key = runs.set_index("tags.trial_key")
    controls = runs[runs["tags.control_source"].fillna("") != ""]
    assert len(controls)
    for _, c in controls.iterrows():
        source = by_key.loc[c["tags.source_key"]]
        assert c["tags.source_run_id"] == source["run_id"]
        assert c["start_time"] >= source["end_time"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_smoke_plan_runs_controls_after_their_sources_and_marks_them(tmp_path, jobs):
    args = ["run", "--suite", "smoke", "--methods", SMOKE_PLAN, "--sparsities", "0.5", "--seeds", "0,1",
            "--budgets", "fit", "--epochs", "2", "--no-progress", "--jobs", str(jobs), "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = load_runs(_store(tmp_path), "smoke")
    runs = runs[runs["tags.trial_key"].notna()]
    assert sorted(runs["tags.method"].value_counts().items()) == [
        ("imp", 2), ("network_slimming", 2), ("reinit", 2), ("scratch", 2), ("shuffle", 2)]
    _ran_after_sources(runs)
    board = result.output[result.output.index("| method"):]
    lines = [line.split("|")[1].strip() for line in board.splitlines() if line.startswith("|")][2:]
    assert lines[:5] == ["imp", "reinit [source=imp]", "shuffle [source=imp]", "network_slimming",
                         "scratch [source=network_slimming]"]  # each control right after its source
    for control, source in (("reinit [source=imp]", "imp"), ("scratch [source=network_slimming]", "network_slimming")):
        row = next(line for line in board.splitlines() if line.startswith(f"| {control} "))
        assert any(mark.format(s=source) in row for mark in ("< {s}", "n.s. vs {s}", "> {s}")), row
    assert "- Controls: imp − reinit [source=imp] = " in result.output


def test_a_control_whose_source_did_not_fit_or_never_finished_is_not_run_and_says_why(tmp_path):
    args = ["run", "--suite", "smoke", "--methods", "reinit[source=imp]", "--sparsities", "0.8", "--seeds", "0",
            "--epochs", "2", "--no-progress", "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)  # at 1x IMP does not fit: it is recorded, its control is not run
    assert result.exit_code == 0, result.output
    assert "Adding imp: the source of reinit[source=imp]." in result.output
    assert "reinit[source=imp] s=0.8 seed=0 1x: not run, source imp (key " in result.output
    assert "did not fit its budget (needs >= " in result.output and "1 controls not run" in result.output
    runs = load_runs(_store(tmp_path), "smoke")
    assert list(runs["tags.method"].dropna()) == ["imp"]  # nothing recorded for the control

    from pruning_bench.execution.runner import run_trial
    from pruning_bench.tracking.tracker import Tracker

    plan = _plan(MethodSpec(Reinit, {"source": "imp"}), IMP, sparsities=(0.5,), seeds=(3,))
    control = next(t for t in plan if t.method == "reinit")
    import torch

    result = run_trial(control, Reinit, tracker=Tracker(_store(tmp_path), "smoke"), parent_id=None,
                       results_dir=tmp_path, device=torch.device("cpu"), progress=False)
    assert result.outcome == "no_source" and result.run_id == ""
    assert f"source imp (key {control.source_key}) has not finished: it has no run in this store" in result.detail


def test_each_control_is_marked_against_its_source_in_the_same_cell_by_welch():
    from scipy import stats
    from test_report_ranking import synthetic_runs

    from pruning_bench.report.publish import build_report, leaderboards_markdown

    imp = [0.90, 0.91, 0.92]
    runs = synthetic_runs({("imp", 0.9): imp, ("reinit", 0.9): [0.80, 0.81, 0.82],  # clearly below imp
                           ("shuffle", 0.9): [0.905, 0.915, 0.90],                  # indistinguishable
                           ("scratch", 0.9): [0.95, 0.96, 0.97], ("snip", 0.9): [0.5, 0.51, 0.52]})
    control = runs["tags.method"].isin(["reinit", "shuffle", "scratch"])
    runs.loc[control, "tags.control_source"] = "imp"
    runs.loc[control, "tags.method_variant"] = "source=imp"
    assert stats.ttest_ind([0.905, 0.915, 0.90], imp, equal_var=False).pvalue >= 0.05
    report = build_report(runs, "synthetic")
    marks = report.cells.set_index("method")["vs_source"].to_dict()
    assert marks == {"imp": "", "reinit [source=imp]": "below", "shuffle [source=imp]": "tied",
                     "scratch [source=imp]": "above", "snip": ""}
    lines = [line for line in leaderboards_markdown(report).splitlines() if line.startswith("| ")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines][1:]
    assert [r[0] for r in rows[:4]] == ["imp", "reinit [source=imp]", "scratch [source=imp]", "shuffle [source=imp]"]
    cells = {r[0]: r[1] for r in rows}
    assert cells["reinit [source=imp]"].endswith("(3; < imp)") and "n.s. vs imp" in cells["shuffle [source=imp]"]
    assert "> imp" in cells["scratch [source=imp]"] and "imp" not in cells["snip"]
