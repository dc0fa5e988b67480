"""BudgetMeter: every sample pass counted; the equal policy stops an overspending method."""

from __future__ import annotations

import pytest
from conftest import make_context

from pruning_bench.core.budget import BudgetExceeded, BudgetMeter


def test_meter_count_equals_epochs_times_samples():
    ctx = make_context(policy="equal", epochs=3)
    ctx.train(epochs=3)
    assert ctx.budget.used_samples == 3 * ctx.data.n_train
    assert ctx.budget.epochs_charged == pytest.approx(3.0)
    assert ctx.budget.remaining_samples == 0


def test_equal_policy_stops_overspending_with_clear_error():
    ctx = make_context(policy="equal", epochs=1)
    ctx.train(epochs=1)
    with pytest.raises(BudgetExceeded, match="budget exceeded under the 'equal' policy"):
        ctx.train(steps=1)


def test_native_policy_records_but_does_not_stop():
    ctx = make_context(policy="native", epochs=1)
    ctx.train(epochs=2)
    assert ctx.budget.epochs_charged == pytest.approx(2.0)


def test_fractional_epochs_never_overspend():
    ctx = make_context(policy="equal", epochs=1.5)
    steps = ctx.epochs_to_steps(1.5)
    ctx.train(steps=steps)  # must not raise
    assert ctx.budget.used_samples <= ctx.budget.total_samples
    assert ctx.budget.total_samples - ctx.budget.used_samples < ctx.recipe.batch_size
    assert ctx.remaining_steps(steps) == 0


def test_remaining_steps_from_mid_epoch_fits_exactly():
    ctx = make_context(policy="equal", epochs=2)
    ctx.train(steps=3)
    left = ctx.remaining_steps(start_step=3)
    ctx.train(steps=left, start_step=3)
    assert ctx.budget.used_samples == ctx.budget.total_samples


def test_training_flops_are_three_forward_passes_per_sample():
    ctx = make_context(policy="native", epochs=1)
    ctx.train(epochs=1)
    assert ctx.budget.flops == pytest.approx(3 * ctx.flop_profile.total * ctx.data.n_train)


def test_unknown_policy_and_unit():
    with pytest.raises(ValueError, match="valid: equal, native"):
        BudgetMeter("generous", 1, 10)
    with pytest.raises(ValueError, match="valid: epochs, flops, seconds"):
        BudgetMeter("equal", 1, 10, unit="joules")
    with pytest.raises(ValueError, match="seconds_limit"):
        BudgetMeter("equal", 1, 10, unit="seconds")


def test_forward_only_passes_cost_a_third_and_are_labelled():
    meter = BudgetMeter("equal", 1, 300)
    meter.charge(90, 900.0, label="bn-recalibration", forward_only=True)
    meter.charge(100, 3000.0)
    assert meter.used == pytest.approx(130) and meter.charges["bn-recalibration"].samples == pytest.approx(30)
    assert meter.charges["bn-recalibration"].flops == 900.0 and meter.charges["train"].passes == 1
    with pytest.raises(BudgetExceeded, match="sample passes asked for"):
        meter.charge(171, 0.0)


def test_flops_unit_limit_is_the_dense_runs_flops_and_refuses_more():
    meter = BudgetMeter("equal", 2, 100, unit="flops")
    meter.bind_dense_flops(1000.0)
    assert meter.limit == pytest.approx(2 * 100 * 3 * 1000.0) and meter.budget_epochs == 2
    meter.charge(50, 500_000.0)
    assert meter.remaining == pytest.approx(100_000.0) and meter.fits(100_000.0) and not meter.fits(100_001.0)
    with pytest.raises(BudgetExceeded):
        meter.charge(1, 100_001.0)


def test_clock_pauses_and_state_round_trips():
    meter = BudgetMeter("equal", 1, 10, unit="seconds", seconds_limit=5.0)
    import time
    with meter.paused():
        time.sleep(0.05)
    assert meter.seconds() < 0.04
    meter.charge(4, 40.0, label="scoring")
    restored = BudgetMeter("equal", 1, 10, unit="seconds", seconds_limit=5.0)
    restored.load_state_dict(meter.state_dict())
    assert restored.charges["scoring"].samples == 4 and restored.flops == 40.0
