"""MaskSet: the one definition of sparsity; masks stay enforced through training."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context
from torch import nn

from pruning_bench.core.masks import MaskSet, global_topk


def test_prunable_set_is_every_conv_and_linear_weight(tiny):
    masks = MaskSet(tiny)
    assert masks.names == ["conv.weight", "fc.weight"]
    assert masks.total() == 6 + 36  # biases excluded from the denominator


def test_global_topk_selects_smallest_magnitudes_across_layers(tiny):
    with torch.no_grad():
        tiny.conv.weight.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5, -6.0, 7.0]).view(2, 1, 3))
        tiny.fc.weight.copy_(torch.arange(1, 37, dtype=torch.float).view(3, 12) * 0.25)
    masks = MaskSet(tiny)
    # 42 weights; keep 50%: 21. Magnitudes below the cut: conv {0.5, 1, 2, 3} and fc {0.25..4.25}
    masks.prune_to_global({n: p.detach().abs() for n, p in masks.params.items()}, 0.5)
    all_w = torch.cat([tiny.conv.weight.flatten(), tiny.fc.weight.flatten()])
    kept_before = torch.cat([masks.masks["conv.weight"].flatten(), masks.masks["fc.weight"].flatten()])
    # by hand: the 21 largest of |all weights|
    mags = torch.cat([torch.tensor([1.0, 2, 3, 0.5, 6, 7]), torch.arange(1, 37).float() * 0.25])
    expected = mags >= mags.sort(descending=True).values[20]
    assert kept_before.sum() == 21
    assert torch.equal(kept_before, expected)
    assert masks.masks["conv.weight"].flatten().tolist() == [False, False, False, False, True, True]
    assert (all_w[~kept_before] == 0).all()  # pruned weights were zeroed


def test_exact_count_with_ties():
    scores = {"a": torch.zeros(10), "b": torch.zeros(7)}  # everything tied
    masks = global_topk(scores, 5)
    assert int(masks["a"].sum() + masks["b"].sum()) == 5


def test_among_active_never_revives_pruned_weights(tiny):
    masks = MaskSet(tiny)
    masks.prune_to_global({n: p.detach().abs() for n, p in masks.params.items()}, 0.5)
    first = {n: m.clone() for n, m in masks.masks.items()}
    # scores that favour the pruned weights: they must still stay pruned
    inverted = {n: (~m).float() * 100 + torch.rand(m.shape) for n, m in masks.masks.items()}
    masks.prune_to_global(inverted, 0.75, among_active=True)
    for n, m in masks.masks.items():
        assert not (m & ~first[n]).any()
    assert masks.nonzero() == round(0.25 * 42)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9, 0.95])
def test_achieved_sparsity_equals_target(sparsity):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    masks = MaskSet(model)
    masks.prune_to_global({n: p.detach().abs() for n, p in masks.params.items()}, sparsity)
    assert masks.nonzero() == round((1 - sparsity) * masks.total())
    assert abs(masks.sparsity() - sparsity) <= 1 / masks.total()


def test_update_rejects_wrong_shape_and_unknown_layer(tiny):
    masks = MaskSet(tiny)
    with pytest.raises(ValueError, match="expected"):
        masks.update({"conv.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(KeyError, match="not a prunable weight"):
        masks.update({"conv.bias": torch.ones(2, dtype=torch.bool)})


def test_pruned_weights_stay_exactly_zero_through_training():
    ctx = make_context(policy="native", epochs=2)
    ctx.masks.prune_to_global({n: torch.rand(p.shape, generator=ctx.generator) for n, p in ctx.masks.params.items()},
                              0.7)
    before = {n: m.clone() for n, m in ctx.masks.masks.items()}
    weights_before = {n: p.detach().clone() for n, p in ctx.masks.params.items()}
    ctx.train(epochs=2)
    assert ctx.masks.leaked() == []
    for n, p in ctx.masks.params.items():
        assert torch.equal(ctx.masks.masks[n], before[n])  # the mask stayed fixed
        assert (p.detach()[~before[n]] == 0).all()         # pruned weights are exactly zero
        assert not torch.equal(p.detach()[before[n]], weights_before[n][before[n]])  # kept ones trained


def test_empty_layers_and_leak_detection(tiny):
    masks = MaskSet(tiny)
    masks.update({"conv.weight": torch.zeros(2, 1, 3, dtype=torch.bool)})
    assert masks.empty_layers() == ["conv.weight"]
    with torch.no_grad():
        tiny.conv.weight[0, 0, 0] = 1.0
    assert masks.leaked() == ["conv.weight"]
