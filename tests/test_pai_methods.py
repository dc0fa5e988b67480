"""random, SynFlow and GraSP (pruning at initialisation) against their references on tiny inputs: the
reference computations are re-derived here independently (a closed form, the Synaptic-Flow loop, a
torch.func Hessian-vector product) and compared with the methods' masks and scores."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_context
from pruning_bench.methods.grasp import GraSP, GraSPParams, grasp_scores
from pruning_bench.methods.random_pruning import RandomParams, RandomPruning
from pruning_bench.methods.synflow import (
    SynFlow,
    SynFlowParams,
    schedule_sparsity,
    synflow_prune,
    synflow_scores,
)
from torch import nn

from pruning_bench.core.masks import MaskSet
from pruning_bench.errors import BenchError
from pruning_bench.pruning.layer_densities import erk_densities, keep_counts

# ---- random ---------------------------------------------------------------------------------------

def test_random_erk_reproduces_the_erk_densities_per_layer():
    ctx = make_context(epochs=0.2, sparsity=0.8)
    RandomPruning(RandomParams(distribution="erk")).run(ctx)
    shapes = {n: tuple(w.shape) for n, w in ctx.masks.params.items()}
    total = sum(math.prod(s) for s in shapes.values())
    expected = keep_counts(shapes, erk_densities(shapes, 0.8), round(0.2 * total))
    assert {n: int(m.sum()) for n, m in ctx.masks.masks.items()} == expected
    densities = erk_densities(shapes, 0.8)
    for n, m in ctx.masks.masks.items():  # each layer's density is ERK's, to one weight
        assert abs(float(m.float().mean()) - densities[n]) <= 1 / m.numel() + 1e-9
    assert ctx.masks.leaked() == [] and ctx.budget.epochs_charged > 0


def test_random_masks_differ_by_seed_and_copy_another_trials_layer_counts(tmp_path):
    from pruning_bench.execution.measurements import write_layer_table

    source = make_context(epochs=0.2, sparsity=0.7)
    source.masks.prune_magnitude(0.7)  # some other method's layer-wise allocation
    table = tmp_path / "layer_sparsity.csv"
    write_layer_table(source, table)
    ctx = make_context(epochs=0.2, sparsity=0.7, seed=3)
    RandomPruning(RandomParams(distribution="csv", layers_from=str(table))).run(ctx)
    for n, m in ctx.masks.masks.items():
        assert int(m.sum()) == int(source.masks.masks[n].sum())  # same counts per layer ...
    assert any(not torch.equal(m, source.masks.masks[n]) for n, m in ctx.masks.masks.items())  # ... other weights
    other = make_context(epochs=0.2, sparsity=0.7, seed=4)
    RandomPruning(RandomParams(distribution="uniform")).run(other)
    for m in other.masks.masks.values():
        assert abs(float(m.float().mean()) - 0.3) <= 1 / m.numel() + 1e-9
    with pytest.raises(BenchError, match="is not a file"):
        RandomPruning(RandomParams(distribution="csv", layers_from=str(tmp_path / "nope.csv"))).run(
            make_context(epochs=0.2))
    with pytest.raises(BenchError, match="needs layers_from"):
        RandomPruning.parse_params({"distribution": "csv"})


# ---- SynFlow --------------------------------------------------------------------------------------

def test_synflow_scores_match_the_closed_form_of_a_two_layer_net():
    """R = 1^T |W2| |W1| 1, so dR/dW1_ij = sum_k |W2_ki| and dR/dW2_ki = sum_j |W1_ij|."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    w1, w2 = net[0].weight.detach().abs(), net[2].weight.detach().abs()
    scores = synflow_scores(net, (3,))
    torch.testing.assert_close(scores["0.weight"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(scores["2.weight"], w2 * w1.sum(1)[None, :])
    assert (net[0].weight < 0).any()  # the model itself is not linearised


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, bias=True)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def reference_synflow_masks(model: nn.Module, density: float, iterations: int) -> dict[str, torch.Tensor]:
    """Synaptic-Flow's prune_loop + SynFlow scorer, written from its definitions: masks multiply the
    weights, every state entry is made absolute, eval mode, all-ones input of batch 1, score |g * theta|,
    exponential schedule density^((e + 1) / E), global threshold. The count kept per iteration is
    round(density_e * N) as in the harness (the reference's kthvalue keeps N - int((1 - density_e) N),
    one weight apart at most; the module docstring says so), so the masks must agree exactly."""
    net = copy.deepcopy(model).double().eval()
    weights = {n: m.weight for n, m in net.named_modules() if isinstance(m, (nn.Conv1d, nn.Linear))}
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    for e in range(iterations):
        with torch.no_grad():
            for n, w in weights.items():
                w.mul_(masks[n])
        signs = {k: torch.sign(v) for k, v in net.state_dict().items()}
        with torch.no_grad():
            for v in net.state_dict().values():
                v.abs_()
        net.zero_grad()
        net(torch.ones(1, 1, 8, dtype=torch.float64)).sum().backward()
        scores = {n: (w.grad * w).detach().abs() for n, w in weights.items()}
        with torch.no_grad():
            for k, v in net.state_dict().items():
                v.mul_(signs[k])
        flat = torch.cat([s.flatten() for s in scores.values()])
        keep = round(density ** ((e + 1) / iterations) * flat.numel())
        threshold = torch.sort(flat, descending=True).values[keep - 1]
        masks = {n: (s >= threshold).double() for n, s in scores.items()}
    return {f"{n}.weight": m.bool() for n, m in masks.items()}


def test_synflow_masks_match_the_reference_loop():
    torch.manual_seed(1)
    model = ConvBN()
    with torch.no_grad():  # BN statistics and affine away from their init values, as after any use
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(-1, 1)
    expected = reference_synflow_masks(model, density=0.3, iterations=20)

    class Ctx:  # what synflow_prune uses of the Context
        target_sparsity = 0.7

        def __init__(self):
            self.model = model
            self.data = type("D", (), {"input_shape": (1, 8)})()

        def charge_passes(self, samples, *, label):
            pass

    masks = MaskSet(model)
    synflow_prune(Ctx(), masks, SynFlowParams(iterations=20))
    for n, m in expected.items():
        assert torch.equal(masks.masks[n], m), n
    assert schedule_sparsity(0.7, 19, 20, "exponential") == pytest.approx(0.7)
    assert schedule_sparsity(0.7, 0, 20, "exponential") == pytest.approx(1 - 0.3 ** 0.05)


def test_synflow_run_reaches_the_target_and_charges_its_passes():
    ctx = make_context(epochs=0.3, sparsity=0.9)
    SynFlow(SynFlowParams(iterations=10)).run(ctx)
    assert ctx.masks.nonzero() == round(0.1 * ctx.masks.total())
    assert ctx.budget.charges["scoring"].passes == 10 and ctx.masks.empty_layers() == []


# ---- GraSP ----------------------------------------------------------------------------------------

def test_grasp_scores_equal_theta_times_the_hessian_gradient_product():
    torch.manual_seed(2)
    model = ConvBN().eval()
    x, y = torch.randn(16, 1, 8), torch.randint(0, 3, (16,))
    masks = MaskSet(model)
    scores = grasp_scores(model, masks, [(x, y)], temperature=200.0, bn_eval=True)
    names = list(masks.params)
    params = dict(model.named_parameters())

    def loss(weights):
        return F.cross_entropy(torch.func.functional_call(model, {**params, **weights}, (x,)) / 200.0, y)

    weights = {n: params[n].detach() for n in names}
    g = torch.func.grad(loss)(weights)
    _, hg = torch.func.jvp(torch.func.grad(loss), (weights,), (g,))  # H g
    raw = {n: (weights[n] * hg[n]).detach() for n in names}
    norm = abs(float(sum(r.sum() for r in raw.values()))) + 1e-10
    for n in names:
        torch.testing.assert_close(scores[n], raw[n] / norm, rtol=1e-4, atol=1e-9)


def test_grasp_keeps_the_largest_scores_and_charges_three_passes_per_sample():
    ctx = make_context(epochs=0.5, sparsity=0.8)
    batches = list(ctx.batches(1, batch_size=32, label="probe"))
    expected = grasp_scores(ctx.model, ctx.masks, batches)
    GraSP(GraSPParams(score_batch_size=32)).run(ctx)
    flat = torch.cat([expected[n].flatten() for n in ctx.masks.masks])
    kept = torch.cat([m.flatten() for m in ctx.masks.masks.values()])
    assert int(kept.sum()) == round(0.2 * kept.numel())
    assert flat[kept].min() >= flat[~kept].max()  # the largest theta * Hg are kept
    assert ctx.budget.charges["scoring"].samples == 3 * 32
