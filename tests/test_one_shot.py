"""The one-shot phase helper: how train -> prune -> fine-tune splits the budget under each policy, worked
out by hand on the smoke data (448 training samples in 7 full batches of 64 per epoch; a 2-epoch budget is
896 samples, 14 steps)."""

from __future__ import annotations

import pytest
from conftest import make_context

from pruning_bench.pruning.one_shot import train_prune_finetune


def run(ctx, **kwargs) -> tuple[list[int], float]:
    """The steps of each ctx.train call and the epochs charged when ``prune`` ran."""
    steps: list[int] = []
    train = ctx.train

    def spy(*args, **kw):
        steps.append(kw["steps"])
        return train(*args, **kw)

    ctx.train = spy
    at_prune: list[float] = []

    def prune() -> None:
        at_prune.append(ctx.budget.epochs_charged)
        ctx.masks.prune_magnitude(ctx.target_sparsity, among_active=False)

    train_prune_finetune(ctx, prune, **kwargs)
    assert len(at_prune) == 1
    return steps, at_prune[0]


def test_equal_splits_one_budget_and_fine_tuning_takes_what_is_left():
    ctx = make_context(policy="equal", epochs=2.0)
    steps, at_prune = run(ctx, finetune_fraction=0.25)
    assert steps == [10, 4]                      # floor(0.75 * 896 / 64) = 10, then the 256 samples left
    assert at_prune == pytest.approx(640 / 448)  # pruned after the first phase, not before
    assert ctx.budget.epochs_charged == pytest.approx(2.0)
    assert ctx.masks.sparsity() == pytest.approx(0.5, abs=0.01)


def test_native_trains_a_whole_run_then_fine_tunes_a_share_of_it():
    ctx = make_context(policy="native", epochs=2.0)
    steps, at_prune = run(ctx, finetune_fraction=0.25)
    assert steps == [14, 3]                      # a whole run, then floor(0.25 * 896 / 64) = 3
    assert at_prune == pytest.approx(2.0)
    ctx = make_context(policy="native", epochs=2.0)
    assert run(ctx, finetune_fraction=0.25, native_finetune=1.0)[0] == [14, 14]


def test_in_flops_a_pruned_model_buys_more_fine_tuning_steps():
    ctx = make_context(policy="equal", epochs=2.0, unit="flops", sparsity=0.8)
    steps, _ = run(ctx, finetune_fraction=0.25)
    assert steps[0] == 10 and steps[1] > 4       # the same share of FLOPs pays for more sparse steps


def test_a_fraction_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="finetune_fraction must be in \\(0, 1\\), got 1.0"):
        train_prune_finetune(make_context(), lambda: None, finetune_fraction=1.0)
