"""Network slimming: the BN L1 term, exact shrinking, layer guards, hand counts, and end to end in MLflow."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import make_context
from pruning_bench.methods.network_slimming import BNL1, NetworkSlimming, NetworkSlimmingParams
from torch import nn

from pruning_bench.cli import main
from pruning_bench.core.flops import profile_flops
from pruning_bench.errors import BenchError
from pruning_bench.models import build_model
from pruning_bench.pruning.channel_select import prune_order
from pruning_bench.pruning.shrink import analyze, shrink, shrunk_weight_counts


def gamma_l1(model: nn.Module) -> float:
    return sum(float(m.weight.detach().abs().sum()) for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_l1_term_moves_gammas_towards_zero():
    sums = []
    for lam in (0.0, 1e-2):
        ctx = make_context(epochs=2)
        bns = [m for m in ctx.model.modules() if isinstance(m, nn.BatchNorm1d)]
        ctx.train(steps=14, callbacks=[BNL1(bns, lam)])
        sums.append(gamma_l1(ctx.model))
    assert sums[1] < sums[0] - 0.05


@pytest.mark.parametrize("name,shape", [("mnist1d_cnn", (1, 40)), ("resnet20", (3, 16, 16)),
                                        ("vgg11_bn", (3, 32, 32))])
def test_shrunk_model_computes_what_the_masked_model_computes(name, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_shape=shape)
    structure = analyze(model, shape)
    assert structure.groups and structure.residual == (name == "resnet20")
    keep = {}
    with torch.no_grad():
        for m in model.modules():  # non-trivial eval-mode BN
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for g in structure.groups:
            dropped = torch.randperm(g.channels)[: g.channels // 2]
            bn = model.get_submodule(g.bn)
            bn.weight[dropped] = 0.0
            bn.bias[dropped] = 0.0
            keep[g.bn] = torch.tensor(sorted(set(range(g.channels)) - set(dropped.tolist())))
    small = shrink(model, structure.groups, keep)
    model.eval()
    small.eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-4)
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < sum(p.numel() for p in model.parameters())
    assert sum(shrunk_weight_counts(model, structure.groups, {k: len(v) for k, v in keep.items()}).values()) == \
        sum(m.weight.numel() for m in small.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)))
    if name == "resnet20":  # the residual stream keeps its width; only block-internal channels shrink
        assert small.layer1[0].conv2.out_channels == 16 and small.layer1[0].conv1.out_channels == 8


def test_shrunk_parameter_and_flop_counts_match_a_hand_count():
    model = build_model("smoke_cnn", num_classes=4, input_shape=(1, 16))
    structure = analyze(model, (1, 16))
    groups = {g.bn: g for g in structure.groups}
    assert set(groups) == {"features.1", "features.4"}
    small = shrink(model, structure.groups, {"features.1": torch.tensor([0, 2, 5, 7]),
                                             "features.4": torch.arange(10)})
    # conv1 4x1x3 = 12, conv2 10x4x3 = 120, linear 4x10 = 40
    weights = {n: m.weight.numel() for n, m in small.named_modules() if isinstance(m, (nn.Conv1d, nn.Linear))}
    assert weights == {"features.0": 12, "features.3": 120, "classifier": 40}
    # FLOPs (multiply-add = 2): conv1 2*4*1*3*16 = 384, conv2 (length 8) 2*10*4*3*8 = 1920, linear 2*10*4 = 80
    assert profile_flops(small, (1, 16)).total == 384 + 1920 + 80


def test_prune_order_never_empties_a_layer_and_honours_the_cap():
    gammas = {"a": torch.tensor([1e-6, 2e-6, 3e-6]), "b": torch.tensor([0.5, 0.1, 0.9, 0.7])}
    order = prune_order(gammas, 1.0)
    assert [(bn, i) for bn, i, _ in order] == [("a", 0), ("a", 1), ("b", 1), ("b", 0), ("b", 3)]
    capped = prune_order(gammas, 0.5)
    assert [(bn, i) for bn, i, _ in capped] == [("a", 0), ("b", 1), ("b", 0)]


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_run_shrinks_the_model_and_reaches_the_target(fraction):
    ctx = make_context(epochs=2, sparsity=0.6)
    denominator = ctx.masks.total()
    NetworkSlimming(NetworkSlimmingParams(channel_fraction=fraction)).run(ctx)
    logged = {k: v for k, v, _ in ctx.logged}
    kept = [v for k, v in logged.items() if k.startswith("channels_kept.")]
    assert len(kept) == 2 and all(v >= 1 for v in kept)
    sparsity = 1 - ctx.masks.total() / denominator
    if fraction == 0.0:
        assert sparsity >= 0.6
    else:
        assert logged["channels_kept_fraction"] <= 0.5 + 1e-9
    assert logged["l1_lambda"] == 1e-4  # no residual additions in smoke_cnn
    assert ctx.budget.epochs_charged == 2.0


def test_model_without_batchnorm_is_a_clear_error():
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32, 4))
    with pytest.raises(BenchError, match="needs BatchNorm"):
        NetworkSlimming().run(make_context(model))


def test_unreachable_target_fails_before_training():
    # with at most half of each layer pruned, smoke_cnn keeps 12 + 96 + 32 of 472 weights: 70% at most
    ctx = make_context(sparsity=0.9)
    with pytest.raises(BenchError, match="at most 0.70"):
        NetworkSlimming(NetworkSlimmingParams(max_layer_prune=0.5)).run(ctx)
    assert ctx.budget.used_samples == 0


def test_end_to_end_rigl_and_slimming_land_in_mlflow(tmp_path):
    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods", "rigl,network_slimming",
                                       "--sparsities", "0.5", "--epochs", "2", "--results-dir", str(tmp_path),
                                       "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from pruning_bench.report.publish import load_runs
    runs = load_runs(f"sqlite:///{tmp_path}/mlflow.db", "smoke")
    assert sorted(runs["tags.method"]) == ["network_slimming", "rigl"]
    assert (runs["status"] == "FINISHED").all()
    for metric in ("test_acc", "sparsity", "flops_effective", "train_flops", "latency_ms", "latency_batch_size"):
        assert runs[f"metrics.{metric}"].notna().all(), metric
    slim = runs[runs["tags.method"] == "network_slimming"].iloc[0]
    assert slim["metrics.sparsity"] >= 0.5 and slim["metrics.latency_dense_ms"] > 0
    assert slim["metrics.flops_effective"] < slim["metrics.flops_dense"]
    assert slim["metrics.channels_kept.features.1"] >= 1
    rigl = runs[runs["tags.method"] == "rigl"].iloc[0]
    assert rigl["metrics.rigl_updates"] >= 1 and abs(rigl["metrics.sparsity"] - 0.5) < 1e-2
