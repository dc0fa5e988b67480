"""End to end through the CLI into a temporary MLflow store, and every bad input -> one line, exit 2."""

from __future__ import annotations

import re
import textwrap

import pytest
from click.testing import CliRunner

from pruning_bench.cli import main


def bench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One real smoke sweep of three methods, shared by the tests below."""
    root = tmp_path_factory.mktemp("store")
    result = bench("run", "--suite", "smoke", "--methods", "dense,global_magnitude,snip",
                   "--sparsities", "0.5,0.8", "--seeds", "0,1", "--epochs", "2", "--results-dir", str(root),
                   "--no-progress")
    assert result.exit_code == 0, result.output
    return root, result.output


def runs_of(root):
    from pruning_bench.report.publish import load_runs
    return load_runs(f"sqlite:///{root}/mlflow.db", "smoke")


def test_run_records_every_trial_with_the_schema(store):
    root, output = store
    runs = runs_of(root)
    assert len(runs) == 2 + 2 * 2 * 2  # dense x 2 seeds + 2 methods x 2 sparsities x 2 seeds
    for metric in ("test_acc", "test_loss", "sparsity", "nonzero_params", "total_params", "flops_dense",
                   "flops_effective", "train_flops", "epochs_charged", "train_seconds", "peak_memory_mb",
                   "val_acc", "empty_layers"):
        assert runs[f"metrics.{metric}"].notna().all(), metric
    for tag in ("trial_key", "method", "suite", "seed", "target_sparsity", "budget_policy", "device",
                "torch_version", "git_commit"):
        assert runs[f"tags.{tag}"].notna().all(), tag
    pruned = runs[runs["tags.method"] != "dense"]
    assert ((pruned["metrics.sparsity"] - pruned["tags.target_sparsity"].astype(float)).abs() < 1e-3).all()
    assert (runs["metrics.epochs_charged"] == 2.0).all()  # equal policy: everyone used the same budget
    assert (runs["tags.mlflow.parentRunId"].nunique()) == 1   # children of one sweep run
    assert "[10/10]" in output and "| snip" in output
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    curve = client.get_metric_history(runs["run_id"].iloc[0], "train_loss")
    assert sorted(m.step for m in curve) == [1, 2]  # one point per epoch, x = epochs charged


def test_layer_table_artifact(store):
    import csv

    from mlflow.tracking import MlflowClient
    root, _ = store
    runs = runs_of(root)
    run_id = runs[runs["tags.method"] == "snip"]["run_id"].iloc[0]
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    path = client.download_artifacts(run_id, "layer_sparsity.csv", str(root / "dl"))
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows][0].endswith(".weight")
    total = sum(int(r["params"]) for r in rows)
    nonzero = sum(int(r["nonzero"]) for r in rows)
    assert total == runs[runs["run_id"] == run_id]["metrics.total_params"].iloc[0]
    assert nonzero == runs[runs["run_id"] == run_id]["metrics.nonzero_params"].iloc[0]


def test_second_identical_run_runs_nothing(store):
    root, _ = store
    result = bench("run", "--suite", "smoke", "--methods", "dense,global_magnitude,snip",
                   "--sparsities", "0.5,0.8", "--seeds", "0,1", "--epochs", "2", "--results-dir", str(root),
                   "--no-progress")
    assert result.exit_code == 0
    assert "Nothing to run: all 10 trials" in result.output
    assert len(runs_of(root)) == 10


def test_report_prints_the_leaderboard(store):
    root, _ = store
    result = bench("report", "--suite", "smoke", "--results-dir", str(root))
    assert result.exit_code == 0, result.output
    assert "snip" in result.output and "global_magnitude" in result.output and "dense" in result.output


def test_dry_run_prints_plan_and_records_nothing(tmp_path):
    result = bench("run", "--suite", "smoke", "--methods", "snip", "--sparsities", "0.5,0.9", "--seeds", "0,3",
                   "--results-dir", str(tmp_path), "--dry-run")
    assert result.exit_code == 0
    assert "4 trials" in result.output and "snip s=0.9 seed=3" in result.output
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args, message", [
    (["run", "--suite", "nope"], "unknown suite 'nope'"),
    (["run", "--suite", "smoke", "--methods", "snipp"], "unknown method 'snipp'. Did you mean 'snip'?"),
    (["run", "--suite", "smoke", "--sparsities", "0.5,1.2"], "sparsity 1.2 is out of range"),
    (["run", "--suite", "smoke", "--sparsities", "abc"], "'abc' is not a number"),
    (["run", "--suite", "smoke", "--seeds", "x"], "--seeds: 'x' is not a seed or a range of seeds"),
    (["run", "--suite", "smoke", "--epochs", "0"], "--epochs must be > 0"),
    (["run", "--suite", "cifar10", "--data-dir", "/nonexistent/cifar", "--no-download"], "/nonexistent/cifar"),
    (["run", "--suite", "smoke", "--plugin", "/nonexistent/plugin.py"], "plugin file"),
    (["report", "--suite", "never_ran"], "no runs recorded for suite 'never_ran'"),
    (["run", "--suite", "smoke", "--device", "gpu0"], "--device 'gpu0' is not a torch device"),
    (["run", "--suite", "smoke", "--budgets", "1,x4y"], "--budgets: 'x4y' is not a budget level"),
    (["run", "--suite", "smoke", "--budgets", "0"], "budget multiple 0 is out of range"),
    (["run", "--suite", "smoke", "--budget-unit", "seconds"], "--budget-unit seconds needs the base run in seconds"),
    (["run", "--suite", "smoke", "--methods", "imp[prune_fraction=2]"], "prune_fraction must be in (0, 1), got 2"),
    (["run", "--suite", "smoke", "--methods", "imp[rewind]"], "'rewind' in 'imp[rewind]' is not key=value"),
    (["run", "--suite", "smoke", "--methods", "imp[bogus=1]"], "method 'imp' has no parameter 'bogus'"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, [*args, "--results-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output


def test_bad_input_does_not_touch_existing_records(store):
    root, _ = store
    before = (root / "mlflow.db").read_bytes()
    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods", "bogus", "--results-dir", str(root)])
    assert result.exit_code == 2
    assert (root / "mlflow.db").read_bytes() == before


def test_malformed_suite_file_exits_2(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[dataset]\nname = 'smoke'\n[model]\nname = 'smoke_cnn'\n[budget]\nepochs = 1\nbogus = 2\n")
    result = CliRunner().invoke(main, ["run", "--suite", str(path), "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown key 'budget.bogus'" in result.output


def test_save_model_logs_weights_loadable_with_weights_only(tmp_path):
    import torch
    from mlflow.tracking import MlflowClient

    result = bench("run", "--suite", "smoke", "--methods", "snip", "--sparsities", "0.6", "--epochs", "1",
                   "--save-model", "--results-dir", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    run_id = runs_of(tmp_path)["run_id"].iloc[0]
    path = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").download_artifacts(run_id, "model.pt", str(tmp_path))
    saved = torch.load(path, weights_only=True)
    kept = sum(int(m.sum()) for m in saved["masks"].values())
    total = sum(m.numel() for m in saved["masks"].values())
    assert abs(1 - kept / total - 0.6) < 1e-2
    for name, mask in saved["masks"].items():
        assert (saved["state_dict"][name][~mask] == 0).all()


INTERRUPTING = textwrap.dedent('''
    import os
    from pruning_bench import Method

    class Interrupting(Method):
        """Trains, but raises Ctrl-C at seed 1 while the marker file exists."""
        name = "interrupting"

        def run(self, ctx):
            if ctx.seed == 1 and os.path.exists(os.environ["INTERRUPT_MARKER"]):
                raise KeyboardInterrupt
            ctx.train(steps=ctx.budget_steps)
''')


def test_interrupted_sweep_resumes_without_redoing_finished_trials(tmp_path, monkeypatch):
    plugin = tmp_path / "interrupting.py"
    plugin.write_text(INTERRUPTING)
    marker = tmp_path / "marker"
    marker.write_text("x")
    monkeypatch.setenv("INTERRUPT_MARKER", str(marker))
    args = ["run", "--suite", "smoke", "--plugin", str(plugin), "--methods", "interrupting", "--sparsities",
            "0.5", "--seeds", "0-2", "--epochs", "1", "--results-dir", str(tmp_path), "--no-progress"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code != 0 and "run the same command again to resume" in first.output
    from pruning_bench.report.publish import load_runs
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert list(load_runs(uri, "smoke")["tags.seed"]) == ["0"]             # seed 0 finished
    assert list(load_runs(uri, "smoke", status="KILLED")["tags.seed"]) == ["1"]  # seed 1 recorded KILLED
    marker.unlink()
    second = bench(*args)
    assert second.exit_code == 0, second.output
    assert "Skipping 1 finished trials; running 2 of 3" in second.output
    assert sorted(load_runs(uri, "smoke")["tags.seed"]) == ["0", "1", "2"]


def test_parallel_jobs_record_the_same_results_as_sequential(store, tmp_path):
    root, _ = store
    result = bench("run", "--suite", "smoke", "--methods", "snip", "--sparsities", "0.5", "--seeds", "0,1",
                   "--epochs", "2", "--jobs", "2", "--threads", "1", "--results-dir", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "Running on 2 worker processes" in result.output
    parallel = runs_of(tmp_path).set_index("tags.trial_key")
    sequential = runs_of(root).set_index("tags.trial_key")
    assert len(parallel) == 2 and parallel.index.isin(sequential.index).all()  # same trial keys
    for key in parallel.index:  # same seeds, same numbers, whichever process ran them
        assert parallel.loc[key, "metrics.test_acc"] == sequential.loc[key, "metrics.test_acc"]
    assert parallel["tags.mlflow.parentRunId"].nunique() == 1


LEAKING = textwrap.dedent('''
    import torch
    from pruning_bench import Method

    class Leaking(Method):
        """Prunes, trains, then writes into pruned weights: its sparsity would be a lie."""
        name = "leaking"

        def run(self, ctx):
            ctx.masks.prune_magnitude(ctx.target_sparsity)
            ctx.train(steps=2)
            with torch.no_grad():
                for p in ctx.masks.params.values():
                    p.add_(0.5)
''')


def test_a_method_that_leaks_into_pruned_weights_fails_its_trial(tmp_path):
    plugin = tmp_path / "leaking.py"
    plugin.write_text(LEAKING)
    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--plugin", str(plugin), "--methods", "leaking",
                                       "--sparsities", "0.5", "--epochs", "1", "--results-dir", str(tmp_path),
                                       "--no-progress"])
    assert result.exit_code == 1 and "MaskLeak: masked weights are not zero" in result.output
    from pruning_bench.report.publish import load_runs
    failed = load_runs(f"sqlite:///{tmp_path}/mlflow.db", "smoke", status="FAILED")
    assert list(failed["tags.method"]) == ["leaking"]


def test_misspelled_method_params_section_is_an_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n'
                    '[method_params.snipp]\nscore_batches = 2\n')
    result = CliRunner().invoke(main, ["run", "--suite", str(path), "--methods", "snip", "--dry-run"])
    assert result.exit_code == 2
    assert "[method_params.snipp] names no registered method" in result.output


def test_method_variants_are_separate_trials_with_their_own_keys(tmp_path):
    result = bench("run", "--suite", "smoke", "--methods", "imp,imp[prune_fraction=0.5, rewind_iters=3]",
                   "--sparsities", "0.8", "--budgets", "1,2.5", "--results-dir", str(tmp_path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "4 trials" in result.output
    assert "imp[prune_fraction=0.5, rewind_iters=3] s=0.8 seed=0 2.5x" in result.output
    assert "imp s=0.8 seed=0 1x" in result.output  # the suite's own rewind point is its default: no variant
    assert re.search(r"imp s=0.8 seed=0 2.5x +10 epochs", result.output)  # 2.5 x the 4-epoch base run
    assert len(set(line.split("key=")[1] for line in result.output.splitlines() if "key=" in line)) == 4


def test_model_options_reach_the_builder_and_bad_ones_are_one_line_errors(tmp_path):
    from pruning_bench.models import build_model

    wide = build_model("mnist1d_cnn", num_classes=10, input_shape=(1, 40), options={"channels": 64})
    assert wide.conv2.weight.shape == (64, 64, 3)
    path = tmp_path / "s.toml"
    path.write_text('[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\nchanels = 8\n[budget]\nepochs = 1\n')
    result = CliRunner().invoke(main, ["run", "--suite", str(path), "--methods", "dense", "--results-dir",
                                       str(tmp_path)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "model 'smoke_cnn' has no option 'chanels'" in errors[0]
    assert str(path) in errors[0] and not (tmp_path / "mlflow.db").exists()
