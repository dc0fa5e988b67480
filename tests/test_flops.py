"""FLOPs: torch.utils.flop_counter's convention (multiply-add = 2), effective FLOPs scale per layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_bench.core.flops import profile_flops
from pruning_bench.core.masks import MaskSet
from pruning_bench.models import build_model


def test_resnet20_dense_flops_match_known_figure():
    model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32))
    profile = profile_flops(model, (3, 32, 32))
    # He et al.'s ResNet-20 is ~41 M multiply-adds (81 MFLOPs); option-B shortcuts add ~0.26 M MACs
    assert 40.5e6 <= profile.total / 2 <= 41.5e6
    assert sum(profile.per_layer.values()) == pytest.approx(profile.total, rel=1e-3)  # all in conv/linear


def test_per_layer_flops_by_hand():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 5))
    profile = profile_flops(model, (1, 8))
    assert profile.per_layer == {"0.weight": 2 * 4 * 1 * 3 * 6, "3.weight": 2 * 24 * 5}
    assert profile.total == 2 * 4 * 3 * 6 + 2 * 24 * 5


def test_effective_flops_scale_with_density_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 5))
    profile = profile_flops(model, (1, 8))
    masks = MaskSet(model)
    conv_mask = torch.zeros(4, 1, 3, dtype=torch.bool)
    conv_mask[:2] = True                          # conv density 0.5
    fc_mask = torch.zeros(5, 24, dtype=torch.bool)
    fc_mask[0, :6] = True                         # fc density 6/120
    masks.update({"0.weight": conv_mask, "3.weight": fc_mask})
    effective = profile.effective(masks.layer_density())
    assert effective == pytest.approx(0.5 * 144 + (6 / 120) * 240)
