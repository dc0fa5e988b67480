"""N:M sparsity and Taylor channel pruning: the N:M pattern in every group, the fixed target, FO-BN
importance against finite differences of the loss, and the iterative, physically shrunk Taylor run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import make_context
from pruning_bench.methods.nm_sparsity import NMParams, NMSparsity, nm_mask, supports_nm
from pruning_bench.methods.taylor_channels import TaylorChannels, TaylorImportance, TaylorParams
from torch import nn

from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.errors import BenchError
from pruning_bench.plan.suite import load_suite
from pruning_bench.plan.trial import build_plan
from pruning_bench.pruning.shrink import analyze


def groups_of(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Every run of m consecutive weights along the input dimension, as rows."""
    return weight.movedim(1, -1).reshape(-1, m)


def observed_granularity(shapes_before: dict[str, torch.Size], ctx, m: int = 4) -> str:
    """The granularity a run's result shows, read off its weights and masks (not off the method's class):
    ``structured`` when whole channels are gone (the weight tensors themselves are smaller, no mask left
    inside them); ``semi_structured`` when the shapes are intact and every layer whose input dimension
    holds groups of ``m`` keeps the same number of weights in each group; else ``unstructured``."""
    masks = ctx.masks.masks
    if {n: p.shape for n, p in ctx.masks.params.items()} != shapes_before:
        assert all(bool(mask.all()) for mask in masks.values())  # physically removed, nothing masked
        return "structured"
    patterned = [groups_of(mask, m).sum(1) for mask in masks.values()
                 if mask.dim() >= 2 and mask.shape[1] % m == 0 and not bool(mask.all())]
    if patterned and all(int(kept.min()) == int(kept.max()) for kept in patterned):
        return "semi_structured"
    return "unstructured"


def test_nm_mask_keeps_the_n_largest_of_every_group_along_the_input_dimension():
    torch.manual_seed(0)
    w = torch.randn(3, 8, 2)  # a conv weight (out, in, k): groups run over the 8 input channels
    mask = nm_mask(w, 2, 4)
    assert mask.shape == w.shape
    for group, keep in zip(groups_of(w, 4), groups_of(mask, 4), strict=True):
        assert int(keep.sum()) == 2
        assert group.abs()[keep].min() >= group.abs()[~keep].max()
    assert supports_nm(torch.zeros(4, 8), 4) and not supports_nm(torch.zeros(4, 6), 4)


@pytest.mark.parametrize("schedule", ["oneshot", "gradual"])
def test_nm_run_leaves_at_most_n_nonzeros_in_every_group(schedule):
    ctx = make_context(epochs=1, sparsity=0.5)
    NMSparsity(NMParams(schedule=schedule, gradual_begin=0.1, gradual_end=0.5)).run(ctx)
    carried = 0
    for name, w in ctx.masks.params.items():
        if supports_nm(w, 4):
            carried += 1
            assert (groups_of(w.detach(), 4) != 0).sum(1).max() <= 2, name
            assert (groups_of(ctx.masks.masks[name], 4).sum(1) == 2).all(), name
        else:
            assert bool(ctx.masks.masks[name].all()), name  # cannot carry the pattern: dense
    assert carried >= 2 and ctx.masks.leaked() == []
    assert dict((k, v) for k, v, _ in ctx.logged)["nm_dense_layers"] == len(ctx.masks.params) - carried


def test_nm_runs_at_its_own_sparsity_whatever_is_requested():
    suite = load_suite("smoke")
    plan = build_plan(suite, [NMSparsity], [0.8, 0.9], [0, 1], "equal")
    assert {t.target_sparsity for t in plan} == {0.5} and len(plan) == 2
    one_in_eight = build_plan(suite, [NMSparsity], [0.9], [0], "equal",
                              params={"nm_sparsity": NMParams(n=1, m=8)})
    assert [t.target_sparsity for t in one_in_eight] == [0.875]
    # run as planned, it leaves the semi-structured pattern the runner tags it with (tags.granularity is
    # granularity_of(); the report and the runner's 2:4 latency measurement read that tag)
    ctx = make_context(epochs=1, sparsity=plan[0].target_sparsity)
    shapes = {n: p.shape for n, p in ctx.masks.params.items()}
    NMSparsity().run(ctx)
    assert observed_granularity(shapes, ctx) == "semi_structured" == NMSparsity.granularity_of()
    patterned = [m for m in ctx.masks.masks.values() if m.dim() >= 2 and m.shape[1] % 4 == 0]
    kept = sum(int(m.sum()) for m in patterned) / sum(m.numel() for m in patterned)
    assert kept == 1 - plan[0].target_sparsity  # 2 of every 4 wherever the pattern fits
    for mask in ctx.masks.masks.values():  # not structured: no output channel removed whole
        assert bool(mask.flatten(1).any(1).all())


class FrozenWeights(TrainCallback):
    """Records the batches the training loop draws and skips its optimizer steps: every batch's gradient is
    taken at the same weights."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def after_backward(self, state: StepState) -> None:
        self.batches.append((state.inputs.clone(), state.targets.clone()))

    def skip_optimizer_step(self, state: StepState) -> bool:
        return True


def removal_slope(model: nn.Module, bn_name: str, channel: int, x: torch.Tensor, y: torch.Tensor,
                  eps: float = 1e-4) -> float:
    """d/dt of the loss with channel ``channel``'s BN scale and shift both multiplied by (1 - t), at t = 0
    (central differences, no autograd): the first-order Taylor estimate of the loss change when that
    channel is removed (gamma = beta = 0 zeroes its output)."""
    bn = model.get_submodule(bn_name)
    gamma, beta = bn.weight.detach()[channel].item(), bn.bias.detach()[channel].item()

    def loss_at(t: float) -> float:
        with torch.no_grad():
            bn.weight[channel], bn.bias[channel] = gamma * (1 - t), beta * (1 - t)
            return float(F.cross_entropy(model(x), y))

    slope = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    loss_at(0.0)
    return slope


def test_taylor_importance_is_the_mean_squared_first_order_loss_change_of_removing_a_channel():
    """FO-BN (Molchanov et al. 2019, Eq. 8 on a channel's (gamma, beta)): per minibatch, the square of the
    first-order loss change of removing the channel; averaged over the minibatches of the training loop.
    Derived here by finite differences of the loss in float64, not from the gradients."""
    ctx = make_context(epochs=1, sparsity=0.5)
    groups = analyze(ctx.model, ctx.data.input_shape).groups
    torch.manual_seed(1)
    with torch.no_grad():  # fresh BNs have beta = 0, which would hide beta's term
        for g in groups:
            ctx.model.get_submodule(g.bn).weight.uniform_(0.5, 1.5)
            ctx.model.get_submodule(g.bn).bias.uniform_(-1.0, 1.0)
    frozen = FrozenWeights()
    taylor = TaylorImportance(ctx.model, groups)
    ctx.train(steps=3, callbacks=[frozen, taylor])  # the real loop: three different minibatches
    assert len(frozen.batches) == 3
    reference = copy.deepcopy(ctx.model).double().train()
    importance = taylor.importance()
    assert set(importance) == {g.bn for g in groups}
    for g in groups:
        slopes = torch.tensor([[removal_slope(reference, g.bn, c, x.double(), y) for x, y in frozen.batches]
                               for c in range(g.channels)], dtype=torch.float64)
        expected = (slopes ** 2).mean(1)
        tolerance = {"rtol": 2e-3, "atol": 1e-6 * float(expected.max())}  # float32 gradients in the loop
        torch.testing.assert_close(importance[g.bn].double(), expected, **tolerance)
        assert torch.equal(importance[g.bn].argsort(), expected.argsort())  # the pruning order too


def test_taylor_prunes_iteratively_shrinks_and_respects_the_cap():
    ctx = make_context(epochs=3, sparsity=0.5)
    total = ctx.masks.total()
    original = {g.bn: g.channels for g in analyze(ctx.model, ctx.data.input_shape).groups}
    shapes = {n: p.shape for n, p in ctx.masks.params.items()}
    TaylorChannels(TaylorParams(prune_steps=4)).run(ctx)
    assert ctx.masks.total() < total  # physically smaller
    assert 1 - ctx.masks.total() / total >= 0.5  # the parameter sparsity reached the target
    steps = [(s, v) for k, v, s in ctx.logged if k == "taylor_sparsity"]
    assert [s for s, _ in steps] == [1, 2, 3, 4]
    assert all(a <= b for (_, a), (_, b) in zip(steps, steps[1:], strict=False))  # iterative, growing
    assert steps[0][1] >= 0.5 / 4 - 1e-9 and steps[0][1] < 0.5
    for g in analyze(ctx.model, ctx.data.input_shape).groups:  # at most 80% of a layer removed
        assert g.channels >= original[g.bn] - int(0.8 * original[g.bn])
    assert ctx.budget.used_samples <= ctx.budget.total_samples
    assert ctx.budget.total_samples - ctx.budget.used_samples < ctx.recipe.batch_size
    assert observed_granularity(shapes, ctx) == "structured" == TaylorChannels.granularity_of()  # as tagged


def test_taylor_unreachable_target_fails_before_training():
    # the same bound as slimming's: at most half of each smoke_cnn layer pruned leaves 70% sparsity at most
    ctx = make_context(sparsity=0.9)
    with pytest.raises(BenchError, match="taylor_channels can reach at most 0.70"):
        TaylorChannels(TaylorParams(max_layer_prune=0.5)).run(ctx)
    assert ctx.budget.used_samples == 0


def test_new_methods_run_end_to_end_with_their_granularity_tags(tmp_path):
    from click.testing import CliRunner

    from pruning_bench.cli import main
    from pruning_bench.report.publish import load_runs

    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods",
                                       "random,synflow,grasp,nm_sparsity,taylor_channels", "--sparsities", "0.6",
                                       "--epochs", "2", "--results-dir", str(tmp_path), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = load_runs(f"sqlite:///{tmp_path}/mlflow.db", "smoke").set_index("tags.method")
    assert sorted(runs.index) == ["grasp", "nm_sparsity", "random", "synflow", "taylor_channels"]
    assert runs.loc["nm_sparsity", "tags.target_sparsity"] == "0.5"  # 2:4's own sparsity, not the 0.6 asked
    assert runs.loc["nm_sparsity", "tags.granularity"] == "semi_structured"
    assert "need a CUDA GPU" in runs.loc["nm_sparsity", "tags.latency_note"]
    assert runs.loc["taylor_channels", "tags.granularity"] == "structured"
    assert runs.loc["taylor_channels", "metrics.latency_dense_ms"] > 0
    for method in ("random", "synflow", "grasp"):
        assert runs.loc[method, "tags.granularity"] == "unstructured"
        assert abs(runs.loc[method, "metrics.sparsity"] - 0.6) < 2e-3
    report = CliRunner().invoke(main, ["report", "--suite", "smoke", "--results-dir", str(tmp_path), "--no-log"])
    assert report.exit_code == 0 and "nm_sparsity" in report.output
