"""Post-training pruning (SparseGPT, Wanda, magnitude; docs/methods.md §15): the algorithms against
restatements of the authors' reference code on tiny layers, conv unfolding, sequential calibration, and
whole trials on the smoke context (counts, N:M groups, budget, calibration charges, errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_context
from pruning_bench.methods.magnitude import Magnitude
from pruning_bench.methods.sparsegpt import SparseGPT, sparsegpt_matrix
from pruning_bench.methods.wanda import Wanda, wanda_pruned
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.pruning.post_training import (
    LayerInputs,
    calibration_batches,
    check_unfolding,
    prune_sequentially,
    spread,
    unfold_input,
)

D = torch.float64


def reference_fasterprune(W, H, sparsity=0.0, prunen=0, prunem=0, blocksize=128, percdamp=0.01, counts=None):
    """IST-DASLab/sparsegpt ``sparsegpt.py::SparseGPT.fasterprune`` restated in float64, loops and all
    (``prunen`` = weights *pruned* per group, as there). ``counts`` replaces the reference's per-block
    threshold index ``int(numel * sparsity)`` (which prunes that many + 1) by ``counts[b] - 1``."""
    W, H = W.clone().to(D), H.clone().to(D)
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(cols)
    H[diag, diag] += damp
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        W1, Q1, Err1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), torch.zeros_like(W[:, i1:i2])
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            index = int(tmp.numel() * sparsity) if counts is None else counts[b] - 1
            mask1 = tmp <= torch.sort(tmp.flatten())[0][index]
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W, pruned


def tiny_layer(rows=8, cols=32, samples=64, seed=0):
    """A weight and H = 2 X^T X / n from ``samples`` calibration rows; input 5 is dead (always 0)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, cols, generator=g, dtype=D)
    X[:, 5] = 0
    return torch.randn(rows, cols, generator=g, dtype=D), 2 * X.T @ X / samples


# ---- (a) SparseGPT against the reference's fasterprune ---------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_sparsegpt_unstructured_matches_the_reference_blocks_and_updates(sparsity):
    W, H = tiny_layer()
    k = 256 - round((1 - sparsity) * 256)
    counts = spread(k, [8, 8, 8, 8])  # the harness's split of the layer's exact count over 4 blocks of 8
    assert sum(counts) == k and max(counts) - min(counts) <= 1
    ours, pruned = sparsegpt_matrix(W, H, prune=k, blocksize=8)
    ref, ref_pruned = reference_fasterprune(W, H, sparsity, blocksize=8, counts=counts)
    assert torch.equal(pruned, ref_pruned) and int(pruned.sum()) == k
    assert torch.allclose(ours, ref, rtol=0, atol=1e-10)
    assert torch.all(ours[pruned] == 0) and torch.all(ours[:, 5] == 0)  # dead input: zeroed
    assert not torch.allclose(ours[~pruned], W[~pruned])  # the kept weights were reconstructed
    # the reference's own threshold prunes int(s * n) + 1 per block: one more than the target
    _, own = reference_fasterprune(W, H, sparsity, blocksize=8)
    assert [int(own[:, i:i + 8].sum()) for i in range(0, 32, 8)] == [int(64 * sparsity) + 1] * 4


def test_sparsegpt_2_4_matches_the_reference_and_keeps_two_of_every_four():
    W, H = tiny_layer(seed=1)
    ours, pruned = sparsegpt_matrix(W, H, prune=0, n=2, m=4, blocksize=8)
    ref, ref_pruned = reference_fasterprune(W, H, prunen=2, prunem=4, blocksize=8)  # prunen: 2 pruned
    assert torch.equal(pruned, ref_pruned)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-10)
    assert torch.all((~pruned).reshape(8, 8, 4).sum(-1) == 2)


# ---- (b) Wanda against the reference's metric and sort ---------------------------------------------------
def reference_wanda(W, inps, sparsity, prune_n=0, prune_m=0, row_counts=None):
    """locuslab/wanda ``WrappedGPT.add_batch`` (one call per sample, a [1, tokens, in] input) and
    ``prune_wanda``'s metric, per-row stable sort and N:M topk, in float64; True = pruned."""
    scaler_row, nsamples = torch.zeros(W.shape[1], dtype=D), 0
    for j in range(inps.shape[0]):
        inp = inps[j].unsqueeze(0)
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).t()
        scaler_row *= nsamples / (nsamples + tmp)
        nsamples += tmp
        scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / nsamples
    W_metric = torch.abs(W) * torch.sqrt(scaler_row.reshape((1, -1)))
    W_mask = torch.zeros_like(W_metric) == 1
    if prune_n != 0:
        for ii in range(W_metric.shape[1]):
            if ii % prune_m == 0:
                tmp = W_metric[:, ii:(ii + prune_m)].float()
                W_mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
        return W_mask, scaler_row
    order = torch.sort(W_metric, dim=-1, stable=True)[1]
    for r in range(W.shape[0]):
        W_mask[r, order[r, :(int(W_metric.shape[1] * sparsity) if row_counts is None else row_counts[r])]] = True
    return W_mask, scaler_row


@pytest.mark.parametrize(("sparsity", "n", "m"), [(0.5, 0, 0), (0.3, 0, 0), (0.5, 2, 4)])
def test_wanda_matches_the_reference_metric_and_per_row_selection(sparsity, n, m):
    g = torch.Generator().manual_seed(2)
    W, inps = torch.randn(8, 32, generator=g, dtype=D), torch.randn(16, 4, 32, generator=g, dtype=D)
    stats = LayerInputs("fc", nn.Linear(32, 8), hessian=False)
    stats.add(inps)  # 16 samples of 4 tokens at once
    rows = spread(256 - round((1 - sparsity) * 256), [32] * 8) if sparsity == 0.3 else None
    ref, scaler = reference_wanda(W, inps, sparsity, m - n if n else 0, m, rows)
    assert torch.allclose(stats.scaler_row()[0], scaler, rtol=1e-12)
    ours = wanda_pruned(W, stats.scaler_row(), sparsity, n, m)
    assert torch.equal(ours, ref)
    if sparsity == 0.5 and not n:  # s * cols whole: exactly the reference's int(s * cols) per row
        assert torch.equal(ours, reference_wanda(W, inps, sparsity)[0])


# ---- (c) convolutions are linear layers on unfolded inputs -----------------------------------------------
CONVS = [nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(3, 4, (2, 3), dilation=2, padding=(1, 0)),
         nn.Conv2d(4, 6, 3, groups=2, padding="same", padding_mode="reflect", bias=False),
         nn.Conv1d(2, 4, 3, stride=2, padding=1), nn.Conv1d(4, 4, 5, dilation=2, groups=2, padding=3)]


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: repr(c))
def test_a_conv_has_the_statistics_of_a_linear_layer_on_its_unfolded_input(conv):
    torch.manual_seed(3)
    x = torch.randn(5, conv.in_channels, *([9] * len(conv.kernel_size)))
    cols = unfold_input(conv, x)  # [groups, positions, in/groups * prod(kernel)]
    if conv.groups == 1 and conv.padding_mode == "zeros":  # against F.unfold (Conv1d through a 2-D view)
        two_d = (lambda t: t) if x.dim() == 4 else (lambda t: (1, *t))
        unf = F.unfold(x.unsqueeze(2) if x.dim() == 3 else x, two_d(conv.kernel_size), two_d(conv.dilation),
                       (0, *conv.padding) if x.dim() == 3 else conv.padding, two_d(conv.stride))
        assert torch.equal(cols[0], unf.transpose(1, 2).reshape(-1, unf.shape[1]).double())
    check_unfolding("conv", conv, x, conv(x))  # the layer's output is its matrix times these columns
    stats = LayerInputs("conv", conv, hessian=True)
    handle = conv.register_forward_hook(stats.hook)
    conv(x)
    handle.remove()
    for g in range(conv.groups):
        linear = LayerInputs("fc", nn.Linear(cols.shape[2], 1), hessian=True)
        linear.add(cols[g].reshape(5, -1, cols.shape[2]))  # 5 samples, their positions as tokens
        assert torch.allclose(stats.hessian()[g], linear.hessian()[0], atol=1e-12)
        assert torch.allclose(stats.scaler_row()[g], linear.scaler_row()[0], atol=1e-12)


def test_a_layer_that_is_not_its_weight_times_its_input_is_refused():
    class Doubled(nn.Linear):
        def forward(self, x):
            return F.linear(x, 2 * self.weight, self.bias)

    layer = Doubled(4, 3)
    x = torch.randn(2, 4)
    with pytest.raises(BenchError, match="layer 'odd' \\(Doubled\\) is not a linear map"):
        check_unfolding("odd", layer, x, layer(x))


# ---- (d) sequential calibration ----------------------------------------------------------------------
def test_the_second_layer_is_calibrated_on_the_output_of_the_pruned_first():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))
    ctx = make_context(net, sparsity=0.5)
    dense_w1 = net[1].weight.detach().clone()
    seen: dict[str, LayerInputs] = {}

    def record(name, module, stats):
        seen[name] = stats
        return Wanda().prune_layer(ctx, name, module, stats)

    prune_sequentially(ctx, ["1.weight", "3.weight"], record, samples=16, hessian=True)
    assert ctx.budget.charges["calibration"].passes == 2
    assert ctx.budget.charges["calibration"].samples == pytest.approx(2 * 16 / 3)
    x = torch.cat(list(calibration_batches(make_context(net), 16))).flatten(1).double()  # the same samples
    assert torch.allclose(seen["1.weight"].hessian()[0], 2 * x.T @ x / 16)
    pruned_w1 = net[1].weight.detach().double()
    assert int((pruned_w1 == 0).sum()) == 128 and torch.equal(ctx.masks.masks["1.weight"], pruned_w1 != 0)
    h = torch.relu(x @ pruned_w1.T + net[1].bias.double())  # by hand, through the pruned first layer
    assert torch.allclose(seen["3.weight"].hessian()[0], 2 * h.T @ h / 16)
    dense_h = torch.relu(x @ dense_w1.double().T + net[1].bias.double())
    assert not torch.allclose(seen["3.weight"].hessian()[0], 2 * dense_h.T @ dense_h / 16)


# ---- (e) whole trials on the smoke context -------------------------------------------------------------
def _groups_of(mask: torch.Tensor, m: int) -> torch.Tensor:
    return mask.flatten(1).reshape(mask.shape[0], -1, m).sum(-1)


@pytest.mark.parametrize("cls", [SparseGPT, Wanda, Magnitude], ids=lambda c: c.name)
@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["unstructured", "2:4"])
def test_a_trial_reaches_its_counts_and_spends_exactly_its_budget(cls, nm):
    params = cls.parse_params({"n": nm[0], "m": nm[1]} if nm else {})
    (sparsity,) = cls.target_sparsities(params, [0.7])
    assert sparsity == (0.5 if nm else 0.7)
    ctx = make_context(policy="equal", epochs=2.0, sparsity=sparsity)
    cls(params).run(ctx)
    pruned_layers = 0
    for name, mask in ctx.masks.masks.items():
        if nm and mask[0].numel() % 4:
            assert bool(mask.all()), name  # a layer without whole groups of 4 columns stays dense
        elif nm:
            assert torch.all(_groups_of(mask, 4) == 2), name
        else:
            assert int(mask.sum()) == round(0.3 * mask.numel()), name
        pruned_layers += not bool(mask.all())
    assert ctx.masks.leaked() == []
    used, limit = ctx.budget.used_samples, ctx.budget.total_samples
    assert limit - ctx.recipe.batch_size <= used <= limit + 1e-9
    assert set(ctx.budget.charges) == ({"train", "calibration"} if cls.statistic else {"train"})
    if cls.statistic:  # one forward-only pass over the 128 calibration samples per pruned layer
        assert ctx.budget.charges["calibration"].samples == pytest.approx(pruned_layers * 128 / 3)
        assert ctx.budget.charges["calibration"].passes == pruned_layers


def test_native_trains_a_whole_run_and_records_calibration_on_top():
    ctx = make_context(policy="native", epochs=2.0, sparsity=0.5)
    SparseGPT().run(ctx)
    assert ctx.budget.charges["train"].samples == 896
    assert ctx.budget.charges["calibration"].samples == pytest.approx(3 * 128 / 3)


def test_fine_tuning_keeps_the_mask_and_takes_the_rest_of_the_budget():
    ctx = make_context(policy="equal", epochs=2.0, sparsity=0.5)
    Wanda(Wanda.parse_params({"finetune_fraction": 0.25, "calibration_samples": 32})).run(ctx)
    # 10 dense steps (0.75 of 896 samples), 32 calibration samples x 3 layers / 3, then 3 steps of the 224 left
    assert ctx.budget.charges["train"].passes == 10 + 3
    assert ctx.budget.used_samples == pytest.approx(896 - 32)
    assert [int(m.sum()) for m in ctx.masks.masks.values()] == [12, 192, 32]  # half of 24, 384, 64
    assert ctx.masks.leaked() == []


def test_a_grouped_convolution_is_pruned_group_by_group():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 8, 3, groups=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 30, 4))
    ctx = make_context(net, sparsity=0.6)
    SparseGPT(SparseGPT.parse_params({"blocksize": 4})).run(ctx)
    assert [int(m.sum()) for m in ctx.masks.masks.values()] == [5, 19, 384]  # round(0.4 * numel)


# ---- (f) parameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "values", "message"), [
    (SparseGPT, {"n": 3, "m": 2}, "n:m must be 0:0 (unstructured) or 0 < n < m, got 3:2"),
    (Wanda, {"n": 2}, "n:m must be 0:0 (unstructured) or 0 < n < m, got 2:0"),
    (SparseGPT, {"blocksize": 0}, "blocksize must be >= 1, got 0"),
    (SparseGPT, {"n": 2, "m": 4, "blocksize": 6}, "blocksize must be a multiple of m for N:M"),
    (SparseGPT, {"percdamp": 0}, "percdamp must be > 0"),
    (Wanda, {"calibration_samples": 0}, "calibration_samples must be >= 1, got 0"),
    (Magnitude, {"finetune_fraction": 1.0}, "finetune_fraction must be in [0, 1), got 1.0"),
    (Magnitude, {"calibration_samples": 8}, "method 'magnitude' has no parameter 'calibration_samples'"),
    (SparseGPT, {"blocksize": 1.5}, "parameter 'sparsegpt.blocksize' must be int"),
])
def test_bad_parameters_are_one_line_errors(cls, values, message):
    with pytest.raises(BenchError) as err:
        cls.parse_params(values)
    assert message in str(err.value) and "\n" not in str(err.value)



def test_an_nm_variant_is_tagged_semi_structured():
    from pruning_bench.methods.nm_sparsity import NMSparsity

    assert SparseGPT.granularity_for(SparseGPT.parse_params({"n": 2, "m": 4})) == "semi_structured"
    assert SparseGPT.granularity_for(SparseGPT.parse_params({})) == "unstructured"
    assert NMSparsity.granularity_for(NMSparsity.parse_params({})) == "semi_structured"
