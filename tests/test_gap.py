"""GaP (C-GaP): one grow-and-prune cycle against the reference's rule, the cyclic schedule, the final
sparsity, the budget under ``equal`` (epochs and flops), does-not-fit, resuming, and bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_context
from pruning_bench.methods.gap import GaP, GaPParams, grow, layer_counts, partition_layers, prune_back
from torch import nn

from pruning_bench.core.budget import DoesNotFit
from pruning_bench.core.resume import CallCheckpoint
from pruning_bench.core.steps import PlanSetting
from pruning_bench.errors import BenchError

FAST = GaPParams(partitions=3, rounds=2)  # 7 grow-and-prune steps on the smoke CNN's 3 layers


class ThreeLayers(nn.Module):
    """conv(1->2, k3) -> conv(2->2, k1) -> linear(2 -> 4): 6 + 4 + 8 weights, checkable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 2, 3, bias=False)
        self.conv2 = nn.Conv1d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean(dim=2))


def reference_keep(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The reference's rule (prune_utils/admm.py::irregular_pruning), restated: keep |w| strictly above
    numpy's (linearly interpolated) percentile 100 * sparsity of all |w| of the layer."""
    a = weight.detach().abs().double().numpy()
    return torch.from_numpy(a > np.percentile(a, 100 * sparsity))


def spy(ctx, calls: list) -> None:
    """Record masks and weights at the start and the end of every ctx.train call."""
    orig = ctx.train

    def train(*args, **kwargs):
        def state():
            return ({n: m.clone() for n, m in ctx.masks.masks.items()},
                    {n: p.detach().clone() for n, p in ctx.masks.params.items()})
        start, flops = state(), ctx.budget.flops
        result = orig(*args, **kwargs)
        calls.append({"start": start, "end": state(), "kwargs": kwargs, "flops": ctx.budget.flops - flops})
        return result

    ctx.train = train


def test_one_grow_prune_cycle_matches_the_reference_by_hand():
    ctx = make_context(ThreeLayers(), sparsity=0.5)
    names = ctx.masks.names
    assert partition_layers(names, 3) == [["conv1.weight"], ["conv2.weight"], ["fc.weight"]]
    counts = layer_counts(ctx, "uniform")
    assert counts == {"conv1.weight": 3, "conv2.weight": 2, "fc.weight": 4}  # every layer at 50%
    with torch.no_grad():
        ctx.model.conv1.weight.copy_(torch.tensor([[[0.3, -0.1, 0.5]], [[0.05, -0.7, 0.2]]]))
        ctx.model.conv2.weight.copy_(torch.tensor([[[0.4], [-0.05]], [[0.9], [-0.2]]]))
        ctx.model.fc.weight.copy_(torch.tensor([[0.1, -0.2], [0.3, -0.4], [0.5, -0.6], [0.7, -0.8]]))
    conv1_mask = torch.tensor([[[True, False, True]], [[False, True, False]]])
    fc_mask = torch.tensor([[False, True], [False, True], [False, True], [False, True]])
    # partition 1 (conv2) is the dense one; partitions 0 and 2 sparse at their counts
    ctx.masks.update({"conv1.weight": conv1_mask, "fc.weight": fc_mask})
    before = {n: p.detach().clone() for n, p in ctx.masks.params.items()}
    conv2_before = before["conv2.weight"].clone()

    prune_back(ctx, ["conv2.weight"], counts)  # end of the step: partition 1 back to 50% by |w|
    grow(ctx, ["fc.weight"])                   # next step: partition 2 dense

    # by hand: |conv2| = 0.4, 0.05, 0.9, 0.2 -> keep 0.9 and 0.4; the reference's 50th percentile is 0.3
    expected_conv2 = torch.tensor([[[True], [False]], [[True], [False]]])
    assert torch.equal(ctx.masks.masks["conv2.weight"], expected_conv2)
    assert torch.equal(expected_conv2, reference_keep(conv2_before, 0.5))
    w2 = ctx.masks.params["conv2.weight"].detach()
    assert torch.equal(w2[expected_conv2], conv2_before[expected_conv2]) and (w2[~expected_conv2] == 0).all()
    # grown: dense, its pruned weights re-enter at 0, the kept ones unchanged
    assert ctx.masks.masks["fc.weight"].all()
    fc = ctx.masks.params["fc.weight"].detach()
    assert torch.equal(fc, torch.tensor([[0.0, -0.2], [0.0, -0.4], [0.0, -0.6], [0.0, -0.8]]))
    # the third partition keeps its mask and weights
    assert torch.equal(ctx.masks.masks["conv1.weight"], conv1_mask)
    assert torch.equal(ctx.masks.params["conv1.weight"].detach(), before["conv1.weight"])
    assert ctx.masks.nonzero() == 3 + 2 + 8


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_prune_back_is_the_references_percentile_rule_within_one_weight_per_layer(sparsity):
    ctx = make_context(sparsity=sparsity)  # smoke CNN: 24, 384 and 64 weights
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ctx.masks.params.values():
            p.copy_(torch.randn_like(p))
    weights = {n: p.detach().clone() for n, p in ctx.masks.params.items()}
    counts = layer_counts(ctx, "uniform")
    prune_back(ctx, ctx.masks.names, counts)
    for n, w in weights.items():
        ours, ref = ctx.masks.masks[n], reference_keep(w, sparsity)
        assert int(ours.sum()) == counts[n]
        assert abs(int(ref.sum()) - counts[n]) <= 1                # percentile vs exact count
        assert torch.equal(ours & ref, ours if counts[n] <= int(ref.sum()) else ref)  # nested: same ranking
        if int(ref.sum()) == counts[n]:
            assert torch.equal(ours, ref)
    assert ctx.masks.nonzero() == round((1 - sparsity) * ctx.masks.total())


def test_partitions_grow_in_scheduled_order_and_the_others_keep_their_masks():
    ctx = make_context(policy="native", epochs=1, sparsity=0.8)
    calls: list = []
    spy(ctx, calls)
    GaP(FAST).run(ctx)
    names, counts = ctx.masks.names, layer_counts(ctx, "uniform")
    assert len(calls) == 2 * 3 + 1 + 1                                  # R K + 1 steps, then the fine-tune
    assert [v for k, v, _ in ctx.logged if k == "gap_partition"] == [0, 1, 2, 0, 1, 2, 0]
    for i, call in enumerate(calls[:-1]):
        masks, weights = call["start"]
        active = names[i % 3]
        assert masks[active].all()                                      # only the active partition is dense
        assert all(int(masks[n].sum()) == counts[n] for n in names if n != active)
        assert torch.equal(call["end"][0][active], masks[active])       # masks fixed while it trains
        if i:
            prev_masks, prev_weights = calls[i - 1]["end"]
            previous = names[(i - 1) % 3]
            for n in names:
                if n not in (active, previous):
                    assert torch.equal(masks[n], prev_masks[n])        # untouched partitions
            keep = torch.topk(prev_weights[previous].abs().flatten(), counts[previous]).indices
            assert set(masks[previous].flatten().nonzero().flatten().tolist()) == set(keep.tolist())
            grown = masks[active] & ~prev_masks[active]
            assert grown.any() and (weights[active][grown] == 0).all()  # grown weights start at 0
    final = calls[-1]["start"][0]
    assert calls[-1]["kwargs"]["label"] == "finetune"
    assert all(int(final[n].sum()) == counts[n] for n in names)
    positions = [c["kwargs"]["data_start"] for c in calls]
    assert positions == sorted(set(positions))                          # every call on new batches


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_run_reaches_the_target_exactly(distribution):
    ctx = make_context(policy="native", epochs=1, sparsity=0.9)
    GaP(GaPParams(partitions=4, rounds=1, distribution=distribution, init_mask="magnitude")).run(ctx)
    assert ctx.masks.nonzero() == round(0.1 * ctx.masks.total())
    assert {n: int(m.sum()) for n, m in ctx.masks.masks.items()} == layer_counts(ctx, distribution)
    assert not ctx.masks.leaked() and not ctx.masks.empty_layers()
    logged = {k: v for k, v, _ in ctx.logged}
    assert logged["gap_partitions"] == 3 and logged["gap_steps"] == 4   # K capped at the 3 layers
    # native: 4 steps of a quarter budget each, then a whole budget of fine-tuning
    assert ctx.budget.charges["finetune"].samples == pytest.approx(448, abs=64)
    assert ctx.budget.charges["train"].samples == pytest.approx(4 * 0.25 * 448, abs=4 * 64)


@pytest.mark.parametrize("unit", ["epochs", "flops"])
def test_equal_budget_is_spent_and_never_exceeded(unit):
    ctx = make_context(policy="equal", epochs=4, sparsity=0.8, unit=unit, min_round_epochs=0.25)
    calls: list = []
    spy(ctx, calls)
    GaP(FAST).run(ctx)
    share = 0.25 / (7 * 0.25 + 1.0)                                    # T / ((R K + 1) T + F)
    assert ctx.budget.used <= ctx.budget.limit
    last_step = 64 * 3 * ctx.effective_flops() if unit == "flops" else 64
    assert ctx.budget.remaining < last_step + 1e-6                      # spent to within one step
    for call in calls[:-1]:                                             # each step: its share, its own mask
        spent = call["flops"] if unit == "flops" else 64 * call["kwargs"]["steps"]
        assert spent <= share * ctx.budget.limit * (1 + 1e-9)
        assert call["kwargs"]["steps"] >= 1
    assert ctx.masks.nonzero() == round(0.2 * ctx.masks.total())
    if unit == "flops":  # the step with the big middle layer dense costs most per step, so it gets fewest
        steps = [c["kwargs"]["steps"] for c in calls[:3]]
        assert steps[1] < steps[0] and steps[1] < steps[2]


def test_equal_budget_too_small_does_not_fit_and_names_its_minimum():
    method = GaP(FAST)
    ctx = make_context(policy="equal", epochs=1, sparsity=0.5, min_round_epochs=0.25)
    with pytest.raises(DoesNotFit, match="7 grow-and-prune steps") as info:
        method.run(ctx)
    setting = PlanSetting(0.5, ctx.pricing.counts, 0.25)
    assert info.value.min_budget_epochs == pytest.approx(method.min_budget_epochs(setting))
    assert info.value.min_budget_epochs == pytest.approx(0.25 * (7 * 0.25 + 1) / 0.25)
    assert ctx.budget.used == 0                                          # refused before training
    enough = make_context(policy="equal", epochs=info.value.min_budget_epochs, sparsity=0.5,
                          min_round_epochs=0.25)
    method.run(enough)
    assert enough.masks.nonzero() == round(0.5 * enough.masks.total())


class Crash(Exception):
    """Stands in for a kill right after a checkpoint write."""


def test_resumes_mid_trial_to_the_uninterrupted_result(tmp_path, monkeypatch):
    params = GaPParams(partitions=3, rounds=1)

    def run(directory=None):
        ctx = make_context(policy="native", epochs=1, sparsity=0.5, checkpoint_dir=directory,
                           checkpoint_seconds=0.0 if directory else 300.0)
        GaP(params).run(ctx)
        return ctx

    reference = run()
    original, saves = CallCheckpoint.save, {"n": 0}

    def crashing(self, loop, *, final):
        original(self, loop, final=final)
        saves["n"] += 1
        if saves["n"] == 6:  # inside the second or third step
            raise Crash
    monkeypatch.setattr(CallCheckpoint, "save", crashing)
    with pytest.raises(Crash):
        run(tmp_path)
    monkeypatch.setattr(CallCheckpoint, "save", original)
    resumed = run(tmp_path)
    assert resumed.checkpoints.skipped >= 1
    ours = resumed.model.state_dict()
    for n, a in reference.model.state_dict().items():
        assert torch.equal(a, ours[n]), n
    for n, m in reference.masks.masks.items():
        assert torch.equal(m, resumed.masks.masks[n]), n
    assert resumed.budget.samples == reference.budget.samples
    assert resumed.logged == reference.logged


@pytest.mark.parametrize(("values", "match"), [
    ({"partitions": 0}, "partitions must be >= 1"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"step_fraction": 0.0}, "step_fraction must be > 0"),
    ({"finetune_fraction": -1.0}, "finetune_fraction must be > 0"),
    ({"distribution": "random"}, "distribution 'random' is not one of: uniform, erk"),
    ({"init_mask": "dense"}, "init_mask 'dense' is not one of: random, magnitude"),
    ({"partition": 3}, "no parameter 'partition'"),
    ({"rounds": "ten"}, "must be int"),
])
def test_bad_params_are_one_line_errors(values, match):
    with pytest.raises(BenchError, match=match):
        GaP.parse_params(values)
