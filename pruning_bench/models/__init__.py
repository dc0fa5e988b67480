"""Model registry: ``build_model(name, num_classes=..., input_shape=...)``.

Names:
- ``resnet<d>``, d = 6n+2 (resnet20/32/44/56/110): CIFAR ResNet, He et al. 2016 §4.2, option-B shortcuts.
- ``vgg<d>_bn``, d in 11/13/16/19: CIFAR VGG with BN and one Linear(512, classes), as OpenLTH.
- ``wrn<d>_<k>``, d = 6n+4, k >= 1 (wrn28_2, wrn28_10, wrn16_8): Wide ResNet, Zagoruyko & Komodakis 2016.
- ``mnist1d_cnn``, ``digits_cnn``, ``smoke_cnn``: small CNNs for the embedded data sets and tests;
  ``lenet_300_100``: the lottery-ticket paper's MNIST network.
- ``small_gpt``: a nanoGPT-like causal transformer language model for token windows (T,) (int64 ids).
- ``timm:<name>``, ``torchvision:<name>``: any timm / torchvision classification model, random init.
- ``hf:<model id or path>``: a Hugging Face causal LM, pretrained (or from a ``config`` option, random
  init), for token windows (:mod:`pruning_bench.models.hf`; needs the ``hf`` extra).
- plugins: builders registered by entry point (``pruning_bench.models``) or ``--plugin`` file
  (:mod:`pruning_bench.plugins`).

``options`` (a suite's ``[model]`` keys besides ``name``) are keyword arguments of the builder, checked
first: against the builder's signature (registry models and plugins), against what the harness sets itself
(timm, torchvision), and by the library's own strictness (an unknown timm / torchvision keyword is an error).

``input_shape`` is one sample's shape without the batch dimension: (C, H, W) for images, (C, L) for 1-D
signals. Every conv / linear layer is a plain ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` used once in
``forward``; every BN is ``nn.BatchNorm1d``/``nn.BatchNorm2d``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from pruning_bench.errors import BenchError, unknown_choice
from pruning_bench.models.cifar_resnet import CifarResNet, cifar_resnet, conv_init
from pruning_bench.models.cifar_vgg import CifarVGG, cifar_vgg
from pruning_bench.models.external import TIMM_PREFIX, TORCHVISION_PREFIX, build_timm, build_torchvision
from pruning_bench.models.hf import HF_PREFIX, build_hf
from pruning_bench.models.small_gpt import SmallGPT, gpt_init, small_gpt
from pruning_bench.models.small_nets import (
    MNIST1DCNN,
    DigitsCNN,
    SmokeCNN,
    digits_cnn,
    lenet_300_100,
    mnist1d_cnn,
    smoke_cnn,
)
from pruning_bench.models.wide_resnet import WideResNet, wide_resnet
from pruning_bench.plugins import MODEL, Plugin, PluginTable, check_type

__all__ = ["MODELS", "MODEL_DESCRIPTIONS", "available_models", "build_model", "builtin_model", "describe_models",
           "initialize", "model_options", "plugin_models"]

_IMAGE = "images (C, H, W), e.g. (3, 32, 32)"
_SIGNAL = "1-D signals (C, L), e.g. (1, 40)"
_TOKENS = "token windows (T,), e.g. (128,)"

# Concrete registry names (what available_models() lists), in display order.
_NAMED: dict[str, str] = {
    "resnet20": "CIFAR ResNet-20 (He et al. 2016), 3x3 basic blocks 16/32/64, option-B shortcuts, 0.27M",
    "resnet32": "CIFAR ResNet-32 (He et al. 2016), option-B shortcuts, 0.47M params",
    "resnet44": "CIFAR ResNet-44 (He et al. 2016), option-B shortcuts, 0.66M params",
    "resnet56": "CIFAR ResNet-56 (He et al. 2016), option-B shortcuts, 0.86M params",
    "resnet110": "CIFAR ResNet-110 (He et al. 2016), option-B shortcuts, 1.7M params",
    "vgg11_bn": "CIFAR VGG-11 with BN (Simonyan & Zisserman 2015; OpenLTH variant), 9.2M params",
    "vgg13_bn": "CIFAR VGG-13 with BN (OpenLTH variant), 9.4M params",
    "vgg16_bn": "CIFAR VGG-16 with BN (OpenLTH variant), 14.7M params",
    "vgg19_bn": "CIFAR VGG-19 with BN (OpenLTH variant, lottery-ticket VGG-19), 20.0M params",
    "wrn16_8": "Wide ResNet-16-8 (Zagoruyko & Komodakis 2016), pre-activation, 11.0M params",
    "wrn28_2": "Wide ResNet-28-2 (Zagoruyko & Komodakis 2016), pre-activation, 1.47M params",
    "wrn28_10": "Wide ResNet-28-10 (Zagoruyko & Komodakis 2016), pre-activation, 36.5M params",
    "mnist1d_cnn": "MNIST-1D CNN (Greydanus 2020, ConvBase) with BN: 3 Conv1d x `channels` (25) + Linear",
    "digits_cnn": "small CNN for 8x8 sklearn digits: 3 conv3x3+BN (16/32/32), max-pool, GAP, Linear",
    "smoke_cnn": "tiny 1-D CNN for tests: 2 Conv1d+BN (8/16), GAP, Linear (~600 params)",
    "lenet_300_100": "LeNet-300-100 (the lottery-ticket paper's MNIST net): FC 300, FC 100, Linear; no BN",
    "small_gpt": "nanoGPT-like causal transformer LM (Karpathy): `n_layer` (2) pre-LN blocks, `n_head` (4), "
                 "`n_embd` (64), `block_size` (0 = the data's window), untied Linear head",
}

# Name patterns and external prefixes: buildable, but not listed by available_models().
_PATTERNS: dict[str, str] = {
    "resnet<d>": "any CIFAR ResNet of depth d = 6n+2",
    "vgg<d>_bn": "CIFAR VGG-BN of depth 11, 13, 16 or 19",
    "wrn<d>_<k>": "any Wide ResNet of depth d = 6n+4 and widening factor k >= 1",
    TIMM_PREFIX + "<name>": "any timm model, pretrained=False, in_chans from input_shape",
    TORCHVISION_PREFIX + "<name>": "any torchvision classification model, weights=None, 3 channels",
    HF_PREFIX + "<model_id>": "a Hugging Face causal LM (AutoModelForCausalLM; an id or a local directory), "
                              "pretrained, for token windows; `config` option: random init, nothing downloaded",
}

#: Name -> one-line description: every registry name, then the name patterns and external prefixes.
MODEL_DESCRIPTIONS: dict[str, str] = {**_NAMED, **_PATTERNS}

_SMALL: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "mnist1d_cnn": (mnist1d_cnn, 2),
    "digits_cnn": (digits_cnn, 3),
    "smoke_cnn": (smoke_cnn, 2),
    "lenet_300_100": (lenet_300_100, 3),
    "small_gpt": (small_gpt, 1),
}


_PATTERN_RE = re.compile(r"resnet\d+|vgg\d+_bn|wrn\d+_\d+")


def available_models() -> list[str]:
    """Concrete registry names (``timm:<name>``/``torchvision:<name>``, patterns and plugins are also buildable)."""
    return list(_NAMED)


def describe_models() -> dict[str, str]:
    """Name (or pattern / prefix) -> one-line description, for listings."""
    return dict(MODEL_DESCRIPTIONS)


def plugin_models() -> dict[str, Plugin]:
    """Every model plugin (entry points imported), by name."""
    return MODELS.all()


def builtin_model(name: str) -> str | None:
    """What built-in model ``name`` is or would be (a name, a pattern, a prefix); None when it is free."""
    if name in _NAMED:
        return f"model '{name}'"
    if _PATTERN_RE.fullmatch(name):
        pattern = next(p for p in ("resnet<d>", "vgg<d>_bn", "wrn<d>_<k>") if name.startswith(p[:3]))
        return f"model pattern '{pattern}'"
    if ":" in name:
        return f"prefix '{name.partition(':')[0]}:'"
    return None


MODELS = PluginTable(MODEL, builtin_model)  # model plugins: entry points and --plugin files


def _check_rank(name: str, input_shape: tuple[int, ...], rank: int) -> None:
    if len(input_shape) != rank:
        takes = {3: _IMAGE, 1: _TOKENS}.get(rank, _SIGNAL)
        raise BenchError(f"model '{name}' takes {takes}; got input_shape {tuple(input_shape)}")


def model_options(name: str) -> list[str]:
    """The options (builder keyword arguments) a registry or plugin model accepts; ``[]`` when none."""
    if name in _SMALL:
        return list(_small_defaults(name))
    plugin = MODELS.get(name) if builtin_model(name) is None else None
    return list(plugin.options) if plugin else []


def _small_defaults(name: str) -> dict[str, Any]:
    params = inspect.signature(_SMALL[name][0]).parameters.values()
    return {p.name: p.default for p in params
            if p.kind is p.KEYWORD_ONLY and p.name not in ("num_classes", "input_shape")}


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    """Registry models: every option must be a keyword of the builder, of its default's type."""
    valid = _small_defaults(name) if name in _SMALL else {}
    for key, value in options.items():
        if key not in valid:
            raise BenchError(f"model '{name}' has no option '{key}' (a [model] key); "
                             f"valid: {', '.join(valid) or '(none)'}")
        check_type(f"model '{name}'", key, value, valid[key])


def _build_plugin(plugin: Plugin, num_classes: int, input_shape: tuple[int, ...],
                  options: Mapping[str, Any]) -> nn.Module:
    plugin.check_options(options)
    model = plugin.call({"num_classes": num_classes, "input_shape": input_shape}, options)
    if not isinstance(model, nn.Module):
        raise BenchError(f"model '{plugin.name}' ({plugin.origin}) returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model


def build_model(name: str, *, num_classes: int, input_shape: tuple[int, ...],
                options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a freshly (randomly) initialised model ``name`` for samples of shape ``input_shape``;
    ``options`` (a suite's ``[model]`` keys besides ``name``) go to the builder as keyword arguments."""
    options = dict(options or {})
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BenchError(f"num_classes must be a positive integer, got {num_classes!r}")
    input_shape = tuple(input_shape)
    if not input_shape or not all(isinstance(d, int) and d >= 1 for d in input_shape):
        raise BenchError(f"input_shape must be a tuple of positive integers, got {input_shape!r}")

    if name.startswith(TIMM_PREFIX):
        return build_timm(name[len(TIMM_PREFIX) :], num_classes=num_classes, input_shape=input_shape,
                          options=options)
    if name.startswith(TORCHVISION_PREFIX):
        return build_torchvision(
            name[len(TORCHVISION_PREFIX) :], num_classes=num_classes, input_shape=input_shape, options=options
        )
    if name.startswith(HF_PREFIX):
        return build_hf(name[len(HF_PREFIX) :], num_classes=num_classes, input_shape=input_shape, options=options)
    if name in _SMALL or _PATTERN_RE.fullmatch(name):
        _check_options(name, options)
    if name in _SMALL:
        builder, rank = _SMALL[name]
        _check_rank(name, input_shape, rank)
        try:
            return builder(num_classes=num_classes, input_shape=input_shape, **options)
        except (TypeError, ValueError) as err:
            raise BenchError(f"model '{name}' with options {options}: {err}") from None
    if m := re.fullmatch(r"resnet(\d+)", name):
        _check_rank(name, input_shape, 3)
        return cifar_resnet(int(m[1]), num_classes=num_classes, input_shape=input_shape)
    if m := re.fullmatch(r"vgg(\d+)_bn", name):
        _check_rank(name, input_shape, 3)
        return cifar_vgg(int(m[1]), num_classes=num_classes, input_shape=input_shape)
    if m := re.fullmatch(r"wrn(\d+)_(\d+)", name):
        _check_rank(name, input_shape, 3)
        return wide_resnet(int(m[1]), int(m[2]), num_classes=num_classes, input_shape=input_shape)
    if ":" not in name and (plugin := MODELS.get(name)) is not None:
        return _build_plugin(plugin, num_classes, input_shape, options)
    raise unknown_choice("model", name, {**MODEL_DESCRIPTIONS, **plugin_models()})


_CONV_INIT = (CifarResNet, CifarVGG, WideResNet, MNIST1DCNN, DigitsCNN, SmokeCNN)  # built with conv_init


def initialize(model: nn.Module) -> None:
    """Draw every parameter of ``model`` (e.g. a physically shrunk copy) afresh as its builder does: each
    layer's ``reset_parameters`` (PyTorch's fan-in defaults, at the layer's current size), then, for the
    built-in networks, their ``conv_init``. For a timm, torchvision or plugin model only the layers'
    defaults are re-applied, not a custom scheme of its own."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    if isinstance(model, _CONV_INIT):
        conv_init(model)
    if isinstance(model, SmallGPT):
        gpt_init(model, len(model.blocks))
