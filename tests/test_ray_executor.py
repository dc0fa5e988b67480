"""`bench run --executor ray` on a real local Ray: the same results as a sequential run, trial for trial."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pruning_bench.cli import main
from pruning_bench.report.publish import load_runs

pytestmark = pytest.mark.slow  # a local Ray cluster

ray = pytest.importorskip("ray")

ARGS = ("run", "--suite", "smoke", "--methods", "dense,snip,rigl", "--sparsities", "0.5", "--seeds", "0,1",
        "--epochs", "2", "--threads", "1", "--no-progress")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_records_the_same_results_as_sequential(local_ray, tmp_path):
    on_ray = CliRunner().invoke(main, [*ARGS, "--executor", "ray", "--results-dir", str(tmp_path / "ray")])
    assert on_ray.exit_code == 0, on_ray.output
    assert "Running on Ray: 1 CPUs and 0 GPUs per trial" in on_ray.output
    sequential = CliRunner().invoke(main, [*ARGS, "--results-dir", str(tmp_path / "seq")])
    assert sequential.exit_code == 0, sequential.output
    a = load_runs(f"sqlite:///{tmp_path / 'ray'}/mlflow.db", "smoke").set_index("tags.trial_key").sort_index()
    b = load_runs(f"sqlite:///{tmp_path / 'seq'}/mlflow.db", "smoke").set_index("tags.trial_key").sort_index()
    assert len(a) == 6 and list(a.index) == list(b.index)
    for metric in ("test_acc", "test_loss", "val_acc", "sparsity", "epochs_charged", "flops_effective"):
        assert list(a[f"metrics.{metric}"]) == list(b[f"metrics.{metric}"]), metric
    assert a["tags.mlflow.parentRunId"].nunique() == 1


def test_ray_address_without_the_ray_executor_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, [*ARGS, "--ray-address", "auto", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2 and "needs --executor ray" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_ray_runs_each_control_after_its_source(local_ray, tmp_path):
    from tests.test_control_plans import SMOKE_PLAN, _ran_after_sources

    args = ["run", "--suite", "smoke", "--methods", SMOKE_PLAN, "--sparsities", "0.5", "--seeds", "0,1",
            "--budgets", "fit", "--epochs", "2", "--threads", "1", "--no-progress", "--executor", "ray",
            "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = load_runs(f"sqlite:///{tmp_path}/mlflow.db", "smoke")
    runs = runs[runs["tags.trial_key"].notna()]
    assert len(runs) == 10 and (runs["tags.outcome"] == "finished").all()
    _ran_after_sources(runs)
    assert "n.s. vs imp" in result.output or "< imp" in result.output or "> imp" in result.output
