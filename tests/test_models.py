"""Built-in architectures of the model registry (pruning_bench.models): parameter counts checked by hand,
forward shapes and FLOPs, layer structure and initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruning_bench.models import available_models, build_model

IMAGE = (3, 32, 32)
NATURAL_SHAPES = {"mnist1d_cnn": (1, 40), "digits_cnn": (1, 8, 8), "smoke_cnn": (1, 40), "small_gpt": (8,)}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # bias-free conv weight


def bn(c: int) -> int:
    return 2 * c


def resnet_option_b_params(depth: int, classes: int = 10) -> int:
    """ResNet-(6n+2), He et al. 2016 §4.2, counted by hand: blocks of 2 conv3x3+BN, 1x1 conv+BN projections."""
    n = (depth - 2) // 6
    total = conv(3, 16, 3) + bn(16)
    cin = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if cin != width:
                total += conv(cin, width, 1) + bn(width)
            cin = width
    return total + 64 * classes + classes


def wrn_params(depth: int, k: int, classes: int = 10) -> int:
    """WRN-d-k counted by hand: pre-activation blocks BN-conv3x3-BN-conv3x3, bias-free 1x1 projections."""
    n = (depth - 4) // 6
    total = conv(3, 16, 3)
    cin = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += bn(cin) + conv(cin, width, 3) + bn(width) + conv(width, width, 3)
            if cin != width:
                total += conv(cin, width, 1)
            cin = width
    return total + bn(cin) + cin * classes + classes


# ---------------------------------------------------------------- parameter counts


def test_resnet20_param_count():
    model = build_model("resnet20", num_classes=10, input_shape=IMAGE)
    expected = resnet_option_b_params(20)
    assert expected == 272_474
    assert n_params(model) == expected
    assert 0.26e6 <= n_params(model) <= 0.28e6
    # Frankle & Carbin (2019) report 271K weights for this network: the conv + linear weights.
    prunable = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert prunable == 270_896


def test_resnet56_param_count():
    model = build_model("resnet56", num_classes=10, input_shape=IMAGE)
    assert n_params(model) == resnet_option_b_params(56)
    assert 0.84e6 <= n_params(model) <= 0.87e6


def test_vgg16_bn_param_count():
    model = build_model("vgg16_bn", num_classes=10, input_shape=IMAGE)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected, cin = 0, 3
    for w in widths:
        expected += conv(cin, w, 3) + bn(w)
        cin = w
    expected += 512 * 10 + 10  # the single Linear(512, 10)
    assert n_params(model) == expected
    assert 14.6e6 <= n_params(model) <= 14.8e6
    assert isinstance(model.features, nn.Sequential)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4


@pytest.mark.parametrize(
    ("name", "depth", "k", "low", "high"),
    [
        ("wrn28_10", 28, 10, 36.4e6, 36.6e6),
        ("wrn28_2", 28, 2, 1.46e6, 1.48e6),
    ],
)
def test_wrn_param_count(name, depth, k, low, high):
    model = build_model(name, num_classes=10, input_shape=IMAGE)
    assert n_params(model) == wrn_params(depth, k)
    assert low <= n_params(model) <= high


def test_vgg19_matches_lottery_ticket_size():
    # Frankle & Carbin (2019), Figure 2: VGG-19 for CIFAR-10 has 20.0M weights.
    model = build_model("vgg19_bn", num_classes=10, input_shape=IMAGE)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert 19.95e6 <= weights <= 20.05e6


def test_mnist1d_cnn_shape_and_weights():
    model = build_model("mnist1d_cnn", num_classes=10, input_shape=(1, 40))
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [tuple(c.weight.shape) for c in convs] == [(25, 1, 5), (25, 25, 3), (25, 25, 3)]
    assert all(c.stride == (2,) and c.padding == (1,) for c in convs)
    # Lengths 40 -> 19 -> 10 -> 5, so the Linear sees 25 * 5 = 125 features (ConvBase's linear_in).
    assert model.linear.weight.shape == (10, 125)
    conv_weights = 1 * 25 * 5 + 25 * 25 * 3 + 25 * 25 * 3
    assert sum(c.weight.numel() for c in convs) == conv_weights == 3875
    assert n_params(model) == conv_weights + 3 * bn(25) + 125 * 10 + 10
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 3


def test_small_nets_size():
    smoke = build_model("smoke_cnn", num_classes=10, input_shape=(1, 40))
    assert n_params(smoke) < 2000
    assert smoke(torch.randn(3, 1, 8)).shape == (3, 10)
    assert smoke(torch.randn(3, 1, 100)).shape == (3, 10)
    digits = build_model("digits_cnn", num_classes=10, input_shape=(1, 8, 8))
    expected = conv(1, 16, 3) + bn(16) + conv(16, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32) + 32 * 10 + 10
    assert n_params(digits) == expected


# ---------------------------------------------------------------- forward shapes and FLOPs


@pytest.mark.parametrize("name", available_models())
def test_forward_shape_every_registry_model(name):
    shape = NATURAL_SHAPES.get(name, IMAGE)
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, input_shape=shape)
    tokens = name == "small_gpt"  # a language model: token ids in, logits per token (B, T, vocab) out
    with torch.no_grad():
        out = model(torch.randint(0, 3, (2, *shape)) if tokens else torch.randn(2, *shape))
    assert out.shape == ((2, *shape, 3) if tokens else (2, 3))
    assert torch.isfinite(out).all()


def test_resnet20_flops():
    model = build_model("resnet20", num_classes=10, input_shape=IMAGE).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, *IMAGE))
    flops = counter.get_total_flops()
    assert 80e6 <= flops <= 83e6  # about 41M multiply-adds (He et al. 2016: ~41M for ResNet-20)
    assert flops == 81_626_368


def test_image_models_take_input_channels_from_shape():
    for name in ("resnet20", "vgg11_bn", "wrn16_8", "digits_cnn"):
        model = build_model(name, num_classes=4, input_shape=(1, 28, 28))
        with torch.no_grad():
            assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize(
    "name", ["resnet20", "vgg11_bn", "wrn16_2", "mnist1d_cnn", "digits_cnn", "smoke_cnn"]
)
def test_each_layer_called_once(name):
    """Each conv/linear/BN module runs exactly once per forward (no reuse, no functional convs)."""
    shape = NATURAL_SHAPES.get(name, IMAGE)
    model = build_model(name, num_classes=3, input_shape=shape)
    layer_types = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
    calls: dict[str, int] = {}
    handles = [
        m.register_forward_hook(lambda mod, inp, out, key=key: calls.__setitem__(key, calls.get(key, 0) + 1))
        for key, m in model.named_modules()
        if isinstance(m, layer_types)
    ]
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(2, *shape))
    for h in handles:
        h.remove()
    names = {k for k, m in model.named_modules() if isinstance(m, layer_types)}
    assert calls == dict.fromkeys(names, 1)
    # All multiply-adds come from the registered conv/linear modules: recount them by hand.
    outs: dict[nn.Module, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: outs.__setitem__(mod, out))
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(torch.randn(2, *shape))
    for h in hooks:
        h.remove()
    # weight[0].numel() = in_features, or in_channels * kernel size: the multiply-adds per output value.
    expected = sum(2 * out.numel() * mod.weight[0].numel() for mod, out in outs.items())
    assert counter.get_total_flops() == expected


def test_resnet_block_attributes():
    model = build_model("resnet20", num_classes=10, input_shape=IMAGE)
    first, down = model.layer1[0], model.layer2[0]
    for block in (first, down):
        assert isinstance(block.conv1, nn.Conv2d) and isinstance(block.bn1, nn.BatchNorm2d)
        assert isinstance(block.conv2, nn.Conv2d) and isinstance(block.bn2, nn.BatchNorm2d)
    assert len(first.shortcut) == 0
    assert isinstance(down.shortcut[0], nn.Conv2d) and down.shortcut[0].kernel_size == (1, 1)
    assert down.shortcut[0].stride == (2, 2) and isinstance(down.shortcut[1], nn.BatchNorm2d)


def test_wrn_block_attributes():
    model = build_model("wrn28_2", num_classes=10, input_shape=IMAGE)
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 4
    block = model.layer2[0]
    assert block.bn1.num_features == 32 and block.conv1.out_channels == 64 and block.bn2.num_features == 64
    assert block.conv1.stride == (2, 2)
    assert isinstance(block.shortcut[0], nn.Conv2d) and block.shortcut[0].kernel_size == (1, 1)
    assert len(model.layer2[1].shortcut) == 0


def test_initialisation():
    torch.manual_seed(0)
    model = build_model("resnet56", num_classes=10, input_shape=IMAGE)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    w = model.layer3[1].conv1.weight  # fan_in = 64 * 9
    assert math.isclose(w.std().item(), math.sqrt(2 / (64 * 9)), rel_tol=0.05)
