"""Channel analysis for plugin models in any style: every common flatten (and GAP) spelling puts the last BN
into a channel group, the shrunk model computes what the masked one does, and a flatten a shrunk model
could not repeat is a one-line error instead of a BN silently left out of pruning."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from conftest import make_context
from pruning_bench.methods.network_slimming import NetworkSlimming, NetworkSlimmingParams
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.pruning.shrink import analyze, shrink

LENGTH, CHANNELS, POOLED = 32, 8, 16  # input length, channels of the last BN, length after the max-pool


class Net(nn.Module):
    """conv -> BN -> relu -> conv -> BN -> relu -> max-pool -> ``head`` -> linear: ``head`` is the spelling."""

    def __init__(self, head: Callable[[torch.Tensor], torch.Tensor] | nn.Module, features: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(1, 6, 3, padding=1), nn.BatchNorm1d(6)
        self.conv2, self.bn2 = nn.Conv1d(6, CHANNELS, 3, padding=1), nn.BatchNorm1d(CHANNELS)
        self.head = head
        self.fc = nn.Linear(features, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool1d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(self.head(x))


FLAT = CHANNELS * POOLED
SPELLINGS: dict[str, tuple[Callable[[], Callable | nn.Module], int]] = {  # name -> (head, features per channel)
    "torch.flatten(x, 1)": (lambda: lambda x: torch.flatten(x, 1), POOLED),
    "torch.flatten(x, start_dim=1)": (lambda: lambda x: torch.flatten(x, start_dim=1), POOLED),
    "nn.Flatten()": (nn.Flatten, POOLED),
    "x.flatten(1)": (lambda: lambda x: x.flatten(1), POOLED),
    "x.view(x.size(0), -1)": (lambda: lambda x: x.view(x.size(0), -1), POOLED),
    "x.reshape(x.size(0), -1)": (lambda: lambda x: x.reshape(x.size(0), -1), POOLED),
    "x.view(x.shape[0], -1)": (lambda: lambda x: x.view(x.shape[0], -1), POOLED),
    "torch.reshape(x, (x.size(0), -1))": (lambda: lambda x: torch.reshape(x, (x.size(0), -1)), POOLED),
    "x.view(n, c * l) from x.shape": (lambda: lambda x: x.view(x.shape[0], x.shape[1] * x.shape[2]), POOLED),
    "x.mean(-1)": (lambda: lambda x: x.mean(-1), 1),
    "x.mean(dim=2)": (lambda: lambda x: x.mean(dim=2), 1),
    "torch.amax(x, dim=-1)": (lambda: lambda x: torch.amax(x, dim=-1), 1),
    "pool(x).squeeze(-1)": (lambda: lambda x: F.adaptive_avg_pool1d(x, 1).squeeze(-1), 1),
    "pool(x).view(x.size(0), -1)": (lambda: lambda x: F.adaptive_avg_pool1d(x, 1).view(x.size(0), -1), 1),
}


def masked_and_shrunk(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], list]:
    """Zero half of every group's BN channels (scale and shift) and shrink them away, as test_slimming does."""
    groups = analyze(model, (1, LENGTH)).groups
    keep = {}
    with torch.no_grad():
        for m in model.modules():  # non-trivial eval-mode BN
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for g in groups:
            dropped = torch.randperm(g.channels)[: g.channels // 2]
            bn = model.get_submodule(g.bn)
            bn.weight[dropped] = 0.0
            bn.bias[dropped] = 0.0
            keep[g.bn] = torch.tensor(sorted(set(range(g.channels)) - set(dropped.tolist())))
    return shrink(model, groups, keep), keep, groups


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_every_flatten_spelling_prunes_the_last_bn_and_shrinks_exactly(spelling):
    make_head, per_channel = SPELLINGS[spelling]
    torch.manual_seed(0)
    model = Net(make_head(), CHANNELS * per_channel)
    small, keep, groups = masked_and_shrunk(model)
    last = {g.bn: g for g in groups}["bn2"]  # the BN before the flatten is a channel group
    assert (last.consumer, last.channels, last.per_channel) == ("fc", CHANNELS, per_channel)
    assert small.fc.in_features == len(keep["bn2"]) * per_channel < model.fc.in_features
    model.eval()
    small.eval()
    x = torch.randn(5, 1, LENGTH)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("head", "found"), [
    (lambda x: x.view(-1, FLAT), f"x.view(-1, {FLAT}), which hard-codes the size {FLAT}"),
    (lambda x: x.reshape(x.size(0), FLAT), f", {FLAT}), which hard-codes the size {FLAT}"),
    (lambda x: torch.reshape(x, (-1, CHANNELS * POOLED)), "hard-codes the size"),
])
def test_a_flatten_a_shrunk_model_could_not_repeat_is_a_one_line_error(head, found):
    with pytest.raises(BenchError) as err:
        analyze(Net(head, FLAT), (1, LENGTH))
    message = str(err.value)
    assert "\n" not in message and "Net: BN 'bn2' is flattened by" in message and found in message


def test_a_lost_batch_dimension_is_named():
    head = lambda x: x.reshape(1, -1)  # noqa: E731  (fine for one sample, wrong for a batch)
    with pytest.raises(BenchError, match="cannot run Net on a batch of 2 samples"):
        analyze(Net(head, FLAT), (1, LENGTH))


def test_network_slimming_prunes_the_bn_before_a_view_flatten():
    torch.manual_seed(0)
    model = Net(lambda x: x.view(x.size(0), -1), FLAT)
    ctx = make_context(model, epochs=2, sparsity=0.3)
    NetworkSlimming(NetworkSlimmingParams()).run(ctx)
    logged = {k: v for k, v, _ in ctx.logged}
    assert {"channels_kept.bn1", "channels_kept.bn2"} <= set(logged)
    assert ctx.model.fc.in_features == logged["channels_kept.bn2"] * POOLED
