"""The names the model registry (pruning_bench.models) builds and refuses: external ``timm:`` and
``torchvision:`` models with their options, and every unknown name, wrong input shape or bad architecture
parameter a BenchError; the listing of names and descriptions."""

from __future__ import annotations

import pytest
import torch
from test_models import IMAGE, n_params

from pruning_bench.errors import BenchError
from pruning_bench.models import MODEL_DESCRIPTIONS, available_models, build_model, describe_models

# ---------------------------------------------------------------- external models


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_external_resnet18(name):
    model = build_model(name, num_classes=10, input_shape=IMAGE)
    with torch.no_grad():
        assert model(torch.randn(2, *IMAGE)).shape == (2, 10)
    assert 11.1e6 <= n_params(model) <= 11.3e6  # ResNet-18 with a 10-way head


def test_timm_takes_input_channels():
    model = build_model("timm:resnet18", num_classes=5, input_shape=(1, 32, 32))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_bad_timm_name_suggests_close_name():
    with pytest.raises(BenchError, match="resnet18"):
        build_model("timm:resnet181", num_classes=10, input_shape=IMAGE)


def test_bad_torchvision_name_and_channels():
    with pytest.raises(BenchError, match="resnet18"):
        build_model("torchvision:resnet_18", num_classes=10, input_shape=IMAGE)
    with pytest.raises(BenchError, match="3-channel"):
        build_model("torchvision:resnet18", num_classes=10, input_shape=(1, 32, 32))


def test_timm_options_reach_the_model_and_unknown_or_harness_keys_are_errors():
    model = build_model("timm:resnet18", num_classes=10, input_shape=(3, 32, 32), options={"drop_path_rate": 0.2})
    assert model.layer4[1].drop_path.drop_prob > 0
    with pytest.raises(BenchError, match="model 'timm:resnet18' has no option 'drop_path_rat' \\(a \\[model\\] key\\)"):
        build_model("timm:resnet18", num_classes=10, input_shape=(3, 32, 32), options={"drop_path_rat": 0.2})
    for key in ("pretrained", "features_only"):
        with pytest.raises(BenchError, match=f"option '{key}' \\(a \\[model\\] key\\) is"):
            build_model("timm:resnet18", num_classes=10, input_shape=(3, 32, 32), options={key: True})


def test_torchvision_options_a_swallowing_class_would_ignore_are_errors():
    small = build_model("torchvision:mobilenet_v3_small", num_classes=10, input_shape=(3, 32, 32),
                        options={"width_mult": 0.5, "dropout": 0.1})  # read by _mobilenet_v3_conf / the class
    assert sum(p.numel() for p in small.parameters()) < 1.0e6
    with pytest.raises(BenchError, match="has no option 'widht_mult' .*MobileNetV3 would ignore it"):
        build_model("torchvision:mobilenet_v3_small", num_classes=10, input_shape=(3, 32, 32),
                    options={"widht_mult": 0.5})
    with pytest.raises(BenchError, match="option 'weights' .* is set by the harness"):
        build_model("torchvision:resnet18", num_classes=10, input_shape=(3, 32, 32), options={"weights": "x"})


# ---------------------------------------------------------------- errors


def test_unknown_name_did_you_mean():
    with pytest.raises(BenchError, match="Did you mean 'vgg16_bn'"):
        build_model("vgg16", num_classes=10, input_shape=IMAGE)
    with pytest.raises(BenchError, match="Did you mean 'mnist1d_cnn'"):
        build_model("mnist1d_cn", num_classes=10, input_shape=(1, 40))


@pytest.mark.parametrize(
    ("name", "shape", "pattern"),
    [
        ("resnet20", (1, 40), r"\(C, H, W\)"),
        ("wrn28_2", (32, 32), r"\(C, H, W\)"),
        ("vgg16_bn", (3, 32, 32, 1), r"\(C, H, W\)"),
        ("timm:resnet18", (1, 40), r"\(C, H, W\)"),
        ("mnist1d_cnn", (1, 8, 8), r"\(C, L\)"),
        ("smoke_cnn", IMAGE, r"\(C, L\)"),
    ],
)
def test_wrong_rank_input_shape(name, shape, pattern):
    with pytest.raises(BenchError, match=pattern):
        build_model(name, num_classes=10, input_shape=shape)


@pytest.mark.parametrize(
    ("name", "shape", "pattern"),
    [
        ("resnet18", IMAGE, "6n\\+2"),
        ("wrn27_2", IMAGE, "6n\\+4"),
        ("wrn28_0", IMAGE, ">= 1"),
        ("vgg15_bn", IMAGE, "11, 13, 16, 19"),
        ("vgg11_bn", (3, 8, 8), "16x16"),
    ],
)
def test_bad_architecture_parameters(name, shape, pattern):
    with pytest.raises(BenchError, match=pattern):
        build_model(name, num_classes=10, input_shape=shape)


def test_bad_num_classes_and_shape():
    with pytest.raises(BenchError, match="num_classes"):
        build_model("resnet20", num_classes=0, input_shape=IMAGE)
    with pytest.raises(BenchError, match="input_shape"):
        build_model("resnet20", num_classes=10, input_shape=(3, 0, 32))


def test_registry_listing():
    names = available_models()
    for required in (
        "resnet20",
        "resnet32",
        "resnet56",
        "vgg11_bn",
        "vgg16_bn",
        "vgg19_bn",
        "wrn28_2",
        "wrn28_10",
        "mnist1d_cnn",
        "digits_cnn",
        "smoke_cnn",
    ):
        assert required in names
    assert all(":" not in n for n in names)  # only concrete, buildable names
    assert "timm:<name>" in MODEL_DESCRIPTIONS and "torchvision:<name>" in MODEL_DESCRIPTIONS
    assert set(names) <= set(describe_models())
    assert all(isinstance(d, str) and d and "\n" not in d for d in describe_models().values())
