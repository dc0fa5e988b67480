"""IMP with rewinding: the 1 - 0.8^r plan, rewinding to theta_k, the continued LR schedule, budget
planning, and resuming after an interrupt between rounds."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context
from pruning_bench.methods.imp import IMP, IMPParams

from pruning_bench.core.budget import BudgetExceeded, DoesNotFit
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.errors import BenchError
from pruning_bench.pruning.round_plan import plan_cost, plan_rounds, round_sparsities, samples_between


class LRProbe(TrainCallback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_start(self, state: StepState) -> None:
        self.lrs.append(state.optimizer.param_groups[0]["lr"])


def spy_train(ctx, record: list):
    """Wrap ctx.train: record its keyword arguments and the state at the start of every call."""
    orig = ctx.train

    def train(*args, **kwargs):
        probe = LRProbe()
        record.append({"kwargs": kwargs, "probe": probe,
                       "weights": {n: p.detach().clone() for n, p in ctx.masks.params.items()},
                       "masks": {n: m.clone() for n, m in ctx.masks.masks.items()}})
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), probe]
        return orig(*args, **kwargs)

    ctx.train = train


def test_round_sparsities_follow_openlth_levels():
    assert len(round_sparsities(0.8)) == 8 and len(round_sparsities(0.9)) == 11
    assert len(round_sparsities(0.95)) == 14
    plan = round_sparsities(0.9)
    for r, s in enumerate(plan[:-1], 1):
        assert s == pytest.approx(1 - 0.8 ** r)
    assert plan[-1] == 0.9 and plan[-2] < 0.9 < 1 - 0.8 ** 11


def test_rounds_prune_to_plan_rewind_to_theta_k_and_continue_schedule():
    ctx = make_context(policy="native", epochs=2, sparsity=0.5)  # 14-step rounds, k = 3
    calls: list = []
    spy_train(ctx, calls)
    IMP(IMPParams(rewind_iters=3)).run(ctx)
    pretrain, rounds = calls[0], calls[1:]
    assert pretrain["kwargs"]["label"] == "pretrain" and pretrain["kwargs"]["steps"] == 3
    assert len(rounds) == 5  # rounds 0..4: 1 - 0.8^r for r = 1, 2, 3, then exactly 0.5
    theta_k = rounds[0]["weights"]  # the dense round starts at theta_k
    total = ctx.masks.total()
    for r, call in enumerate(rounds):
        expected = [0.0, 0.2, 0.36, 0.488, 0.5][r]
        kept = sum(int(m.sum()) for m in call["masks"].values())
        assert kept == round((1 - expected) * total)
        for n, w in call["weights"].items():  # survivors at theta_k, pruned weights exactly zero
            m = call["masks"][n]
            assert torch.equal(w[m], theta_k[n][m])
            assert bool((w[~m] == 0).all())
        assert call["kwargs"]["start_step"] == 3 and call["kwargs"]["schedule_steps"] == 14
    # fresh optimizer, LR continued from step k (cosine over the 14-step round), not restarted
    lr_k = ctx.lr_at(3, 14)
    assert rounds[2]["probe"].lrs == [pytest.approx(lr_k)] and lr_k < ctx.recipe.lr
    assert ctx.masks.sparsity() == pytest.approx(0.5, abs=1 / total)
    steps = [s for k, v, s in ctx.logged if k == "round_sparsity"]
    assert steps == [0, 1, 2, 3, 4]
    assert {k for k, _, _ in ctx.logged} >= {"round_val_acc", "round_test_acc", "round_sparsity"}
    # the meter charged exactly pretraining + 5 rounds of steps 3..14
    assert ctx.budget.used_samples == samples_between(ctx, 0, 3) + 5 * samples_between(ctx, 3, 14)
    assert ctx.masks.leaked() == []


def test_equal_budget_plan_fits_and_is_spent_within_the_meter():
    ctx = make_context(policy="equal", epochs=6, sparsity=0.6, min_round_epochs=0.5)  # 42 steps, 1 + 5 rounds
    plan = plan_rounds(ctx, prune_fraction=0.2, rewind_iters=2, rewind_fraction=0.0)
    assert plan.rounds == 5 and plan.rewind_step == 2  # the method's own 20% steps, all of them
    cost = plan_cost(ctx, plan.round_steps, plan.rewind_step, plan.particles)
    assert cost <= ctx.budget.total_samples
    assert plan_cost(ctx, plan.round_steps + 1, 2, plan.particles) > ctx.budget.total_samples  # longest
    IMP(IMPParams(rewind_iters=2)).run(ctx)
    assert ctx.budget.used_samples == cost
    assert ctx.masks.sparsity() == pytest.approx(0.6, abs=1 / ctx.masks.total())


def test_equal_budget_keeps_its_rounds_or_does_not_fit():
    ctx = make_context(policy="equal", epochs=1, sparsity=0.8, min_round_epochs=0.5)  # 7 steps: not 9 rounds
    with pytest.raises(DoesNotFit, match="9 rounds") as info:
        plan_rounds(ctx, prune_fraction=0.2, rewind_iters=0, rewind_fraction=0.0)
    need = info.value.min_budget_epochs
    assert need > 1
    # the smallest budget it names is enough: there the plan has all 8 pruning steps of 20%, each round
    # exactly the suite's minimum length
    enough = make_context(policy="equal", epochs=need, sparsity=0.8, min_round_epochs=0.5)
    plan = plan_rounds(enough, prune_fraction=0.2, rewind_iters=0, rewind_fraction=0.0)
    assert plan.rounds == 8 and plan.sparsities[1] == pytest.approx(0.2)
    assert samples_between(enough, 0, plan.round_steps) >= enough.min_round_epochs * enough.data.n_train
    assert samples_between(enough, 0, plan.round_steps - 1) < enough.min_round_epochs * enough.data.n_train


def test_equal_rounds_are_no_shorter_than_min_round_epochs():
    for minimum in (0.5, 1.0, 1.5):
        ctx = make_context(policy="equal", epochs=16, sparsity=0.6, min_round_epochs=minimum)
        plan = plan_rounds(ctx, prune_fraction=0.2, rewind_iters=2, rewind_fraction=0.0)
        assert plan.rounds == 5
        assert samples_between(ctx, plan.rewind_step, plan.round_steps) >= minimum * ctx.data.n_train
    with pytest.raises(DoesNotFit):  # 6 rounds of 3 epochs do not fit in 16
        plan_rounds(make_context(policy="equal", epochs=16, sparsity=0.6, min_round_epochs=3.0),
                    prune_fraction=0.2, rewind_iters=2, rewind_fraction=0.0)


def test_meter_stops_overspending():
    ctx = make_context(policy="equal", epochs=1, sparsity=0.5)
    with pytest.raises(BudgetExceeded):
        ctx.train(steps=ctx.budget_steps + 1)


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    params = IMPParams(rewind_iters=2)
    ref = make_context(policy="native", epochs=1, sparsity=0.5)
    IMP(params).run(ref)

    ctx = make_context(policy="native", epochs=1, sparsity=0.5, checkpoint_dir=tmp_path)
    calls: list = []
    spy_train(ctx, calls)
    orig = ctx.train

    def interrupted(*args, **kwargs):
        if len(calls) == 3:  # pretrain, round 0, round 1 done: interrupt at the start of round 2
            raise KeyboardInterrupt
        return orig(*args, **kwargs)

    ctx.train = interrupted
    with pytest.raises(KeyboardInterrupt):
        IMP(params).run(ctx)
    assert (tmp_path / "checkpoint.pt").is_file()

    resumed = make_context(policy="native", epochs=1, sparsity=0.5, checkpoint_dir=tmp_path)
    rcalls: list = []
    spy_train(resumed, rcalls)
    IMP(params).run(resumed)
    assert len(rcalls) == 3  # rounds 2, 3, 4 only: no pretraining, no finished round again
    assert resumed.budget.used_samples == ref.budget.used_samples
    for n in ref.masks.masks:
        assert torch.equal(resumed.masks.masks[n], ref.masks.masks[n])
    for (n, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert [s for k, _, s in resumed.logged if k == "round_sparsity"] == [0, 1, 2, 3, 4]


def test_bad_params_are_one_line_errors():
    with pytest.raises(BenchError, match="prune_fraction"):
        IMP.parse_params({"prune_fraction": 1.5})
    with pytest.raises(BenchError, match="no parameter"):
        IMP.parse_params({"rewind": 3})
