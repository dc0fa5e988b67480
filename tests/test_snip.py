"""SNIP: |g * w| on one batch at init, BN in eval mode, global top-k."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet, make_context
from pruning_bench.methods.snip import Snip, SnipParams, snip_scores
from torch import nn

from pruning_bench.core.masks import MaskSet


def test_scores_equal_grad_times_weight_by_hand(tiny):
    torch.manual_seed(3)
    x, y = torch.randn(5, 1, 8), torch.tensor([0, 1, 2, 1, 0])
    masks = MaskSet(tiny)
    scores = snip_scores(tiny, masks, [(x, y)])
    # by hand: the gradient of the mean cross-entropy with autograd.grad, then |g * w| / sum
    ref = TinyNet()
    ref.load_state_dict(tiny.state_dict())
    loss = F.cross_entropy(ref(x), y)
    gw, gf = torch.autograd.grad(loss, [ref.conv.weight, ref.fc.weight])
    raw = {"conv.weight": (gw * ref.conv.weight).abs(), "fc.weight": (gf * ref.fc.weight).abs()}
    total = sum(r.sum() for r in raw.values())
    for name in raw:
        torch.testing.assert_close(scores[name], raw[name] / total)
    assert abs(sum(float(s.sum()) for s in scores.values()) - 1.0) < 1e-6


def test_scores_use_batchnorm_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    with torch.no_grad():
        model[1].running_mean.fill_(0.7)
        model[1].running_var.fill_(2.0)
    x, y = torch.randn(4, 1, 8), torch.tensor([0, 1, 1, 0])
    scores = snip_scores(model, MaskSet(model), [(x, y)])
    ref = nn.Sequential(nn.Conv1d(1, 3, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 2))
    ref.load_state_dict(model.state_dict())
    ref.eval()  # running statistics, not batch statistics
    g = torch.autograd.grad(F.cross_entropy(ref(x), y), ref[4].weight)[0]
    raw = (g * ref[4].weight).abs()
    conv_raw = (torch.autograd.grad(F.cross_entropy(ref(x), y), ref[0].weight)[0] * ref[0].weight).abs()
    torch.testing.assert_close(scores["4.weight"], raw / (raw.sum() + conv_raw.sum()))
    assert model.training  # mode restored
    assert torch.equal(model[1].running_mean, torch.full((3,), 0.7))  # eval mode did not update stats


def test_snip_run_reaches_target_and_keeps_mask_fixed():
    ctx = make_context(policy="equal", epochs=1, sparsity=0.8)
    seen = []
    orig_train = ctx.train

    def spy(*args, **kwargs):
        seen.append({n: m.clone() for n, m in ctx.masks.masks.items()})
        return orig_train(*args, **kwargs)

    ctx.train = spy
    Snip(SnipParams(score_batch_size=32)).run(ctx)
    assert ctx.masks.nonzero() == round(0.2 * ctx.masks.total())
    assert all(torch.equal(seen[0][n], m) for n, m in ctx.masks.masks.items())
    # the scoring batch is charged (forward + backward, label "scoring"); training gets the rest
    assert ctx.budget.charges["scoring"].samples == 32
    assert ctx.budget.charges["scoring"].flops == pytest.approx(32 * 3 * ctx.flop_profile.total)
    assert ctx.budget.total_samples - ctx.recipe.batch_size < ctx.budget.used_samples <= ctx.budget.total_samples
