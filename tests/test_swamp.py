"""SWAMP: particles from theta_k with their own data orders, SWA inside each, uniform average, BN
recalibration, pruning from the average; equivalence with IMP; budget; resume; end to end in MLflow."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_context
from pruning_bench.methods.imp import IMP, IMPParams
from pruning_bench.methods.swamp import SWAMP, SWACollector, SWAMPParams, average_parameters, swa_points

from pruning_bench.core.training import StepState, TrainCallback, recalibrate_bn
from pruning_bench.pruning.round_plan import samples_between


def spy_train(ctx, record: list) -> None:
    orig = ctx.train

    def train(*args, **kwargs):
        record.append({**kwargs, "weights": {n: p.detach().clone() for n, p in ctx.masks.params.items()}})
        return orig(*args, **kwargs)

    ctx.train = train


def spy_load_average(method, seen: list) -> None:
    """Record each (states, masks) the method averages into ``seen``, checking that pruned weights are zero
    in every state."""
    orig_load = method.load_average

    def checked_load(c, states):
        masks = {n: m.clone() for n, m in c.masks.masks.items()}
        seen.append((states, masks))
        for s in states:  # pruned weights are zero in every particle's SWA solution
            for n, m in masks.items():
                assert bool((s[n][~m] == 0).all())
        orig_load(c, states)

    method.load_average = checked_load


def test_one_particle_without_swa_gives_imps_masks():
    imp_ctx = make_context(policy="native", epochs=1, sparsity=0.6)
    IMP(IMPParams(rewind_iters=2)).run(imp_ctx)
    sw_ctx = make_context(policy="native", epochs=1, sparsity=0.6)
    SWAMP(SWAMPParams(particles=1, swa_start=1.0, rewind_iters=2)).run(sw_ctx)
    for n in imp_ctx.masks.masks:
        assert torch.equal(imp_ctx.masks.masks[n], sw_ctx.masks.masks[n]), n
    training = {k: c.samples for k, c in sw_ctx.budget.charges.items() if k != "bn-recalibration"}
    assert sum(training.values()) == imp_ctx.budget.used_samples  # the same training, plus BN passes
    # one BN recalibration a round (a lone particle is its own average): 6 rounds x 1 batch (0.2 epoch)
    assert sw_ctx.budget.charges["bn-recalibration"].passes == 6


def test_swa_collector_averages_the_chosen_iterates_and_keeps_masks():
    ctx = make_context(policy="native", epochs=2, sparsity=0.5)
    ctx.masks.prune_to_global({n: p.detach().abs() for n, p in ctx.masks.params.items()}, 0.5)
    iterates: dict[int, dict] = {}

    class Record(TrainCallback):
        def on_step_end(self, state: StepState) -> None:
            iterates[state.step + 1] = {n: p.detach().clone() for n, p in state.model.named_parameters()}

    points = swa_points(4, 12, 3)
    assert points == {12, 9, 6}
    collector = SWACollector(ctx.model, ctx.masks, points)
    ctx.train(steps=12, callbacks=[Record(), collector])
    assert collector.collected == 3
    avg = collector.parameters()
    for n in avg:
        torch.testing.assert_close(avg[n], sum(iterates[t][n] for t in (6, 9, 12)) / 3)
    for n, m in ctx.masks.masks.items():
        assert bool((avg[n][~m] == 0).all())


def test_particles_average_bn_recalibration_and_masks():
    ctx = make_context(policy="native", epochs=2, sparsity=0.36)
    method = SWAMP(SWAMPParams(particles=3, rewind_iters=2, swa_interval=1, bn_fraction=1.0))
    calls: list = []
    spy_train(ctx, calls)
    seen: list = []
    spy_load_average(method, seen)
    method.run(ctx)
    # rounds: 0 (dense), 1 (0.2), 2 (0.36), each of 3 particles, round 0 included (the paper's first cycle);
    # every particle's SWA solution is recalibrated and evaluated on its own, then the average
    assert [len(states) for states, _ in seen] == [1, 1, 1, 3] * 3
    particle_acc = [(v, s) for k, v, s in ctx.logged if k == "round_particle_val_acc"]
    assert [s for _, s in particle_acc] == [0, 1, 2] and all(0 <= v <= 1 for v, _ in particle_acc)
    # the output is the uniform average of the last round's particles (BN affine included) ...
    average = average_parameters(method.particle_states)
    for n, q in ctx.model.named_parameters():
        torch.testing.assert_close(q.detach(), average[n] * ctx.masks.masks.get(n, 1))
    bn_weights = [n for n, _ in ctx.model.named_parameters() if n.endswith("1.weight")]
    # BN affine parameters are averaged too: the result is no single particle's
    assert bn_weights and all(any(not torch.equal(s[n], average[n]) for s in method.particle_states)
                              for n in bn_weights)
    # ... with BN statistics recomputed for the averaged weights, on one epoch of training batches
    ref = copy.deepcopy(ctx.model)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.fill_(5.0)
    recalibrate_bn(ref, ctx.batches(ctx.steps_per_epoch, label="test"))
    for a, b in zip(ctx.model.modules(), ref.modules(), strict=True):
        if isinstance(a, torch.nn.BatchNorm1d):
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
    assert ctx.masks.leaked() == []
    assert ctx.masks.sparsity() == pytest.approx(0.36, abs=1 / ctx.masks.total())
    # every particle of a multi-particle round has its own data order, different in every round
    particle_calls = [c for c in calls if c["label"].startswith("particle")]
    seeds = {(c["data_seed"], c["label"]) for c in particle_calls if c["data_seed"] is not None}
    assert len({s for s, _ in seeds}) == 9  # 3 rounds x 3 particles
    first = [ctx.trainer.stream(s).batch(2)[1] for s in sorted({s for s, _ in seeds})]
    assert len({tuple(y.tolist()) for y in first}) > 1  # the orders differ
    # the meter charged pretraining + every particle of every round, by label
    k, R = 2, 14
    per_run = samples_between(ctx, k, R)
    recal = 3 * 4 * ctx.recalibration_samples(1.0) / 3  # 3 rounds x (3 particles + the average), 1/3 each
    assert ctx.budget.charges["bn-recalibration"].samples == pytest.approx(recal)
    assert ctx.budget.charges["particle-0"].samples == 3 * per_run
    assert ctx.budget.charges["particle-2"].samples == 3 * per_run
    training = ctx.budget.used_samples - ctx.budget.charges["bn-recalibration"].samples - \
        ctx.budget.charges["test"].samples
    assert training == pytest.approx(samples_between(ctx, 0, k) + (3 + 3 + 3) * per_run)
    # SWA phase at the constant SWA lr (0.05 * lr / 0.1); the phase before continues the schedule
    swa_calls = [c for c in particle_calls if c.get("scheduler_factory") is not None]
    assert all(c["start_step"] == round(0.75 * R) for c in swa_calls)
    starts = [c for c in particle_calls if c.get("scheduler_factory") is None]
    assert {c["start_step"] for c in starts} == {k}
    theta_k = starts[0]["weights"]  # every particle of every round starts at theta_k (not the average)
    for c in starts:
        for n, w in c["weights"].items():
            kept = w != 0
            assert torch.equal(w[kept], theta_k[n][kept])


def test_swamp_plus_uses_one_particle_below_plus_sparsity():
    method = SWAMP(SWAMPParams(particles=4, swamp_plus=True, plus_sparsity=0.5))
    assert [method.particles_for(r, s) for r, s in enumerate([0.0, 0.2, 0.36, 0.488, 0.59, 0.8])] == \
        [1, 1, 1, 1, 4, 4]


def test_equal_budget_swamp_fits_and_particles_shorten_rounds():
    ctx = make_context(policy="equal", epochs=8, sparsity=0.36, min_round_epochs=0.3)
    SWAMP(SWAMPParams(particles=2, rewind_iters=2)).run(ctx)
    assert ctx.budget.used_samples <= ctx.budget.total_samples
    imp_ctx = make_context(policy="equal", epochs=8, sparsity=0.36, min_round_epochs=0.3)
    IMP(IMPParams(rewind_iters=2)).run(imp_ctx)
    swamp_R = dict((k, v) for k, v, _ in ctx.logged)["plan_round_steps"]
    imp_R = dict((k, v) for k, v, _ in imp_ctx.logged)["plan_round_steps"]
    assert swamp_R < imp_R


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    params = SWAMPParams(particles=2, rewind_iters=2)
    ref = make_context(policy="native", epochs=1, sparsity=0.36)
    SWAMP(params).run(ref)
    ctx = make_context(policy="native", epochs=1, sparsity=0.36, checkpoint_dir=tmp_path)
    calls: list = []
    spy_train(ctx, calls)
    orig = ctx.train

    def interrupted(*args, **kwargs):
        in_round_2 = any(c["desc"].startswith("swamp round 2") for c in calls)
        if in_round_2 and kwargs["label"] == "particle-1":  # during round 2, before particle 1
            raise KeyboardInterrupt
        return orig(*args, **kwargs)

    ctx.train = interrupted
    with pytest.raises(KeyboardInterrupt):
        SWAMP(params).run(ctx)
    resumed = make_context(policy="native", epochs=1, sparsity=0.36, checkpoint_dir=tmp_path)
    rcalls: list = []
    spy_train(resumed, rcalls)
    SWAMP(params).run(resumed)
    assert rcalls and all(c["desc"].startswith("swamp round 2") for c in rcalls)
    assert resumed.budget.used_samples == ref.budget.used_samples
    for n in ref.masks.masks:
        assert torch.equal(resumed.masks.masks[n], ref.masks.masks[n])
    for (n, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
