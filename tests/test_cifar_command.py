"""The command this harness is built for, as typed: ``bench run --suite cifar10 --methods swamp,imp,snip``
on CIFAR-10 files in the real "python version" format (tiny ones), with ``--epochs 1``: at the fit level
SWAMP, IMP and SNIP all finish with one identical budget per column; at 1x IMP and SWAMP do not fit."""

from __future__ import annotations

import io
import tarfile

from click.testing import CliRunner
from test_data_download import cifar10_tarball

from pruning_bench.cli import main
from pruning_bench.report.publish import load_runs


def test_cifar10_command_compares_swamp_imp_and_snip_at_one_budget_per_column(tmp_path):
    data = tmp_path / "data"
    with tarfile.open(fileobj=io.BytesIO(cifar10_tarball()), mode="r:gz") as tar:
        tar.extractall(data, filter="data")
    result = CliRunner().invoke(main, [
        "run", "--suite", "cifar10", "--methods", "swamp,imp,snip", "--epochs", "1", "--seeds", "0",
        "--data-dir", str(data), "--no-download", "--threads", "1", "--no-progress",
        "--results-dir", str(tmp_path / "results")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = load_runs(f"sqlite:///{tmp_path}/results/mlflow.db", "cifar10")
    fit = runs[runs["tags.budget_level"] == "fit"]
    assert len(fit) == 9 and set(fit["tags.outcome"]) == {"finished"}
    for sparsity, column in fit.groupby("tags.target_sparsity"):
        assert set(column["tags.method"]) == {"swamp", "imp", "snip"}, sparsity
        assert column["metrics.budget_epochs"].nunique() == 1, sparsity  # one identical budget
        assert (column["metrics.sparsity"] - float(sparsity)).abs().max() < 0.01
    base = runs[runs["tags.budget_level"] == "1x"]
    outcomes = dict(zip(base["tags.method"] + "@" + base["tags.target_sparsity"], base["tags.outcome"], strict=True))
    assert {k: v for k, v in outcomes.items() if not k.startswith("snip")} == {
        f"{m}@{s}": "does_not_fit" for m in ("imp", "swamp") for s in ("0.8", "0.9", "0.95")}
    assert "fit: " in result.output and "- swamp − imp:" in result.output
