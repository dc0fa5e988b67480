"""Identical budgets that keep every method itself: the default equal plans, does-not-fit trials, every
pass charged (and the budget spent), the flops and seconds units, and fine-tuning on new batches."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import make_context
from pruning_bench.methods.dense import Dense
from pruning_bench.methods.global_magnitude import GlobalMagnitude
from pruning_bench.methods.imp import IMP, IMPParams
from pruning_bench.methods.network_slimming import NetworkSlimming
from pruning_bench.methods.rigl import RigL, RigLParams
from pruning_bench.methods.snip import Snip
from pruning_bench.methods.swamp import SWAMP, SWAMPParams

from pruning_bench.cli import main
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.pruning.round_plan import samples_between


def test_default_plans_keep_the_methods_and_small_budgets_do_not_fit(tmp_path):
    """No override of the round rules: at 1x neither IMP nor SWAMP fits the smoke suite at 80% and both
    are recorded as does_not_fit (no accuracy, the budget they need); at 10x IMP runs its 8 pruning rounds
    of 20% and SWAMP trains 4 particles from its first, dense round on. The sweep exits 0."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods", "imp,swamp", "--sparsities", "0.8",
                                       "--budgets", "1,10", "--results-dir", str(tmp_path), "--tracking-uri", uri,
                                       "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 did not fit their budget" in result.output and "needs ≥" in result.output
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = {(r.data.tags["method"], r.data.tags["budget_multiple"]): r
            for r in client.search_runs([experiment.experiment_id]) if "trial_key" in r.data.tags}
    assert sorted(runs) == [("imp", "1"), ("imp", "10"), ("swamp", "1"), ("swamp", "10")]
    for method in ("imp", "swamp"):
        small = runs[(method, "1")]
        assert small.info.status == "FINISHED" and small.data.tags["outcome"] == "does_not_fit"
        assert small.data.metrics["budget_epochs"] == 4
        assert small.data.metrics["min_budget_epochs"] > small.data.metrics["budget_epochs"]
        assert "test_acc" not in small.data.metrics and "9 rounds" in small.data.tags["outcome_detail"]
        big = runs[(method, "10")]
        assert big.data.tags["outcome"] == "finished" and big.data.metrics["budget_epochs"] == 40
        assert big.data.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
        history = sorted(client.get_metric_history(big.info.run_id, "round_sparsity"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(9))  # L = 8 pruning rounds, 9 training rounds
        # 20% of the remaining weights each round (to the nearest weight of the ~600 in the smoke net)
        assert [m.value for m in history[:4]] == pytest.approx([0.0, 0.2, 0.36, 0.488], abs=2e-3)
        assert len(client.get_metric_history(big.info.run_id, "round_test_acc")) == 9
    assert runs[("imp", "1")].data.metrics["min_budget_epochs"] < runs[("swamp", "1")].data.metrics["min_budget_epochs"]
    particles = client.get_metric_history(runs[("swamp", "10")].info.run_id, "round_particles")
    assert {m.step: m.value for m in particles}[0] == 4  # round 0 trains N particles too
    assert all(m.value == 4 for m in particles)
    assert not any((tmp_path / "checkpoints").glob("*/checkpoint.pt"))  # finished trials leave none behind


def _one_round(ctx) -> float:
    """The tolerance for 'spent': one round of an iterative method's plan, else one step."""
    logged = {k: v for k, v, _ in ctx.logged}
    if "plan_round_steps" in logged:
        k, R = int(logged["plan_rewind_step"]), int(logged["plan_round_steps"])
        return samples_between(ctx, k, R) * logged["plan_particles"]
    return ctx.recipe.batch_size


@pytest.mark.parametrize("method", [Dense(), GlobalMagnitude(), Snip(), IMP(IMPParams(rewind_iters=2)),
                                    SWAMP(SWAMPParams(rewind_iters=2)), RigL(RigLParams(delta_t=3)),
                                    NetworkSlimming()], ids=lambda m: m.name)
def test_equal_budget_is_spent_and_never_exceeded(method):
    ctx = make_context(policy="equal", epochs=12, sparsity=0.36, min_round_epochs=0.5)
    method.run(ctx)
    used, limit = ctx.budget.used_samples, ctx.budget.total_samples
    assert used <= limit
    assert used >= limit - _one_round(ctx), (used, limit)
    labels = set(ctx.budget.charges)
    if method.name == "swamp":  # BN recalibration is a charged pass of its own
        assert ctx.budget.charges["bn-recalibration"].samples > 0
        assert {"pretrain", "particle-0", "particle-3"} <= labels
    if method.name == "snip":
        assert ctx.budget.charges["scoring"].samples == 128


def test_flops_unit_lets_sparse_from_the_start_methods_train_longer():
    dense = make_context(policy="equal", epochs=2, sparsity=0.9, unit="flops")
    Dense().run(dense)
    snip = make_context(policy="equal", epochs=2, sparsity=0.9, unit="flops")
    steps = []
    original = snip.train
    snip.train = lambda *a, **k: steps.append(k["steps"]) or original(*a, **k)
    Snip().run(snip)
    dense_steps = dense.budget.charges["train"].passes
    assert dense.budget.limit == snip.budget.limit == pytest.approx(3 * dense.flop_profile.total * 2 * 448)
    assert steps[0] == snip.budget.charges["train"].passes > 2 * dense_steps  # same FLOPs, many more steps
    for ctx in (dense, snip):
        assert ctx.budget.used <= ctx.budget.limit
        assert ctx.budget.remaining < 64 * 3 * ctx.effective_flops() + 1e-6  # spent to within one step


def test_seconds_unit_stops_within_ten_percent_of_its_limit():
    limit = 1.5
    ctx = make_context(policy="equal", epochs=1, unit="seconds", seconds=limit, sparsity=0.5)
    ctx.budget.start_clock()
    Dense().run(ctx)
    spent = ctx.budget.seconds()
    step = spent / max(ctx.budget.charges["train"].passes, 1)
    assert abs(spent - limit) <= 0.1 * limit + step, (spent, ctx.budget.charges["train"].passes)
    assert ctx.budget.budget_epochs > 1  # the budget, measured in epochs of this model on this machine


class LastLearningRate(TrainCallback):
    def on_step_end(self, state: StepState) -> None:
        self.lr = state.optimizer.param_groups[0]["lr"]


def test_seconds_unit_replans_a_run_whose_step_time_estimate_is_wrong():
    # the calibration says steps take three times as long as they do: the plan asks for about a third of the
    # steps the budget pays for; the run re-plans from its own steps, spends its limit and still anneals
    limit = 1.5
    ctx = make_context(policy="equal", epochs=1, unit="seconds", seconds=limit, sparsity=0.5)
    actual = ctx.measure_seconds_per_sample()  # a real step's seconds per sample (nothing charged)
    ctx.pricing.set_measured_seconds((3 * actual, actual))  # as if the calibration had read 3x too slow
    assert ctx.train_cost_per_sample() == 3 * actual  # kept for the plans and the loop's first estimate
    ctx.budget.start_clock()  # the trial's clock starts here (the measurement above is no part of it)
    planned = ctx.remaining_steps()
    last = LastLearningRate()
    result = ctx.train(steps=planned, callbacks=[last])
    spent = ctx.budget.seconds()
    assert abs(spent - limit) <= 0.1 * limit + spent / result.steps, (spent, planned, result.steps)
    assert result.steps > 1.5 * planned, (result.steps, planned)  # far more steps than the wrong plan
    assert last.lr < 0.05 * ctx.recipe.lr  # the cosine schedule was stretched with the run, not cut off


class FirstBatch(TrainCallback):
    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def on_train_start(self, state: StepState) -> None:
        self.seen = False

    def on_step_end(self, state: StepState) -> None:
        if not self.seen:
            self.inputs.append(state.inputs.clone())
            self.seen = True


@pytest.mark.parametrize("method", [GlobalMagnitude(), NetworkSlimming()], ids=lambda m: m.name)
def test_fine_tuning_draws_new_batches(method):
    ctx = make_context(policy="equal", epochs=2, sparsity=0.5)
    recorder = FirstBatch()
    original = ctx.train

    def train(*args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), recorder]
        return original(*args, **kwargs)

    ctx.train = train
    method.run(ctx)
    first_training, first_finetune = recorder.inputs
    assert first_training.shape == first_finetune.shape
    assert not torch.equal(first_training, first_finetune)
