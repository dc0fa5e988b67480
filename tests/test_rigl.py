"""RigL: drop/grow mechanics, the cosine schedule, no SGD step on update steps, and FLOP accounting."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_context
from pruning_bench.methods.rigl import (
    RigL,
    RigLParams,
    RigLUpdater,
    drop_and_grow,
    drop_fraction,
    init_rigl_masks,
)

from pruning_bench.core.training import StepState, TrainCallback


def test_drop_fraction_follows_the_cosine():
    assert drop_fraction(0, 0.3, 1000) == pytest.approx(0.3)
    assert drop_fraction(500, 0.3, 1000) == pytest.approx(0.15)
    assert drop_fraction(250, 0.3, 1000) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert drop_fraction(1000, 0.3, 1000) == pytest.approx(0.0)


def test_drop_smallest_magnitude_grow_largest_gradient_by_hand():
    weight = torch.tensor([0.0, 0.5, -0.1, 0.0, 2.0, -0.3, 0.0, 0.05])
    mask = weight != 0                    # 5 active
    grad = torch.tensor([9.0, 0.0, 0.0, 1.0, 0.0, 0.0, 5.0, 0.0])
    new, grown = drop_and_grow(weight, grad, mask, 0.5, torch.Generator().manual_seed(0))
    # floor(5 * 0.5) = 2 dropped: |0.05| and |-0.1|; 2 grown: largest |grad| among the rest, idx 0 and 6
    assert new.tolist() == [True, True, False, False, True, True, True, False]
    assert grown.tolist() == [True, False, False, False, False, False, True, False]
    assert int(new.sum()) == int(mask.sum())


def test_a_just_dropped_weight_can_be_regrown_and_keeps_its_value_slot():
    weight = torch.tensor([0.1, 1.0, 0.0, 0.0])
    grad = torch.tensor([5.0, 0.0, 1.0, 0.0])
    new, grown = drop_and_grow(weight, grad, weight != 0, 0.5, torch.Generator().manual_seed(0))
    assert new.tolist() == [True, True, False, False]   # idx 0 dropped, then re-grown (largest gradient)
    assert not grown.any()                               # not a new connection: not reset


class Probe(TrainCallback):
    """Records weights/masks/momentum before the RigL update (placed before it) and checks after the step."""

    def __init__(self, ctx, updater: RigLUpdater) -> None:
        self.ctx, self.updater, self.records = ctx, updater, []

    def after_backward(self, state: StepState) -> None:
        self.before = ({n: p.detach().clone() for n, p in self.ctx.masks.params.items()},
                       {n: m.clone() for n, m in self.ctx.masks.masks.items()})

    def on_step_end(self, state: StepState) -> None:
        weights, masks = self.before
        for name, p in self.ctx.masks.params.items():
            old, new = masks[name], self.ctx.masks.masks[name]
            buf = state.optimizer.state.get(p, {}).get("momentum_buffer")
            self.records.append((state.step, name, old, new, weights[name], p.detach().clone(),
                                 None if buf is None else buf.clone()))


def test_update_steps_keep_counts_skip_sgd_and_zero_grown_weights_and_momentum():
    ctx = make_context(epochs=4, sparsity=0.8)  # 7 steps per epoch, 28 steps
    init_rigl_masks(ctx, RigLParams())
    counts = {n: int(m.sum()) for n, m in ctx.masks.masks.items()}
    updater = RigLUpdater(ctx, delta_t=5, alpha=0.3, t_end=17)
    probe = Probe(ctx, updater)
    ctx.train(steps=28, callbacks=[probe, updater])
    assert [s for s, _, _ in updater.updates] == [0, 5, 10, 15]   # t % 5 == 0 and t < 17, none after
    for step, f, _ in updater.updates:
        assert f == pytest.approx(0.15 * (1 + math.cos(math.pi * step / 17)))
    moved_any = False
    for step, name, old, new, w_before, w_after, buf in probe.records:
        assert int(new.sum()) == counts[name]                      # per-layer count never changes
        if step in (0, 5, 10, 15):
            stayed, grown = old & new, new & ~old
            assert torch.equal(w_after[stayed], w_before[stayed])   # no SGD step on an update step
            assert (w_after[grown] == 0).all()
            if buf is not None:
                assert (buf[grown] == 0).all()
            dropped = int((old & ~new).sum())
            f = drop_fraction(step, 0.3, 17)
            assert dropped <= math.floor(int(old.sum()) * f)
            moved_any |= dropped > 0
        else:
            assert torch.equal(old, new)                              # masks fixed between updates
            assert not torch.equal(w_after[new], w_before[new])       # ordinary steps do train
    assert moved_any


def test_dense_gradient_flops_are_charged_on_update_steps():
    ctx = make_context(epochs=2, sparsity=0.8)
    init_rigl_masks(ctx, RigLParams())
    f_sparse, f_dense = ctx.effective_flops(), ctx.flop_profile.total
    updater = RigLUpdater(ctx, delta_t=4, alpha=0.3, t_end=10)
    ctx.train(steps=14, callbacks=[updater])
    n_updates = len(updater.updates)
    assert n_updates == 3
    # App. H: 3 f_S per sample on ordinary steps, 2 f_S + f_D on update steps (the dense gradient)
    expected = ctx.budget.used_samples * 3 * f_sparse + n_updates * 64 * (f_dense - f_sparse)
    assert ctx.budget.flops == pytest.approx(expected)
    assert f_dense > f_sparse


def test_flops_unit_prices_the_dense_gradient_into_the_run_length():
    ctx = make_context(epochs=4, sparsity=0.8)
    ctx.budget.unit = "flops"
    ctx.budget.epoch_cost = None
    ctx.budget.bind_dense_flops(ctx.flop_profile.total)
    init_rigl_masks(ctx, RigLParams())

    def with_updates(T):
        return [RigLUpdater(ctx, delta_t=2, alpha=0.3, t_end=T)]

    plain = ctx.remaining_steps()
    priced = ctx.remaining_steps(callbacks_for=with_updates)
    assert plain > priced > ctx.epochs_to_steps(4)  # sparse steps are cheaper than dense ones, updates dearer
    ctx.train(steps=priced, callbacks=with_updates(priced))
    assert ctx.budget.used <= ctx.budget.limit
    step_cost = 64 * (2 * ctx.effective_flops() + ctx.flop_profile.total)
    assert ctx.budget.remaining < step_cost  # spent to within one (dense-gradient) step


@pytest.mark.parametrize("distribution", ["erk", "uniform"])
def test_run_reaches_the_target_with_a_random_mask(distribution):
    ctx = make_context(epochs=1, sparsity=0.8)
    RigL(RigLParams(distribution=distribution, delta_t=2)).run(ctx)
    total = ctx.masks.total()
    assert ctx.masks.nonzero() == round(0.2 * total)
    assert not ctx.masks.leaked() and not ctx.masks.empty_layers()
    first = next(iter(ctx.masks.masks.values()))
    assert bool(first.all()) == (distribution == "uniform")          # uniform keeps the first layer dense
    assert ctx.budget.epochs_charged == 1.0
