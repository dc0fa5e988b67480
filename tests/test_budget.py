"""BudgetMeter: every sample pass counted; the equal policy stops an overspending method."""

from __future__ import annotations

import pytest
from conftest import make_context

from pruning_bench.budget import BudgetExceeded, BudgetMeter


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
    assert ctx.budget.train_flops == pytest.approx(3 * ctx.flop_profile.total * ctx.data.n_train)


def test_unknown_policy():
    with pytest.raises(ValueError, match="valid: equal, native"):
        BudgetMeter("generous", 1, 10)
