"""Models from timm (Wightman, "PyTorch Image Models", 2019) and torchvision, always randomly initialised.

``timm:<name>`` -> ``timm.create_model(name, pretrained=False, num_classes=n, in_chans=c)``;
``torchvision:<name>`` -> ``torchvision.models.get_model(name, weights=None, num_classes=n)`` (classification
models only, 3 input channels). Both libraries are imported lazily: importing timm takes seconds.

A suite's ``[model]`` options are further keyword arguments (``drop_path_rate = 0.1``). What the harness
sets itself (pretrained weights, classes, input channels) and the libraries' plumbing (feature extraction,
checkpoints, caches) are refused; an unknown keyword is an error, never dropped: timm's model classes reject
unknown keywords themselves, and so do torchvision's, except those whose ``__init__`` takes ``**kwargs``
and ignores them (ConvNeXt, MobileNetV3), which are checked here against the named parameters.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from pruning_bench.errors import BenchError

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"

_HARNESS = "set by the harness (random init, classes and input channels come from the data set)"
_TIMM_NOT_OPTIONS = {
    **dict.fromkeys(("pretrained", "num_classes", "in_chans"), _HARNESS),
    **dict.fromkeys(("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir", "pretrained_strict",
                     "features_only", "out_indices", "feature_cls", "feature_cfg", "pruned", "kwargs_filter",
                     "device", "dtype"), "not an architecture option (weights, feature extraction or placement)"),
}
_TORCHVISION_NOT_OPTIONS = {
    **dict.fromkeys(("weights", "num_classes"), _HARNESS),
    **dict.fromkeys(("progress", "weights_backbone"), "not an architecture option (weight download)"),
}
_UNEXPECTED = re.compile(r"unexpected keyword argument(?:\(s\))?:? \[?'(\w+)'")


def _unknown(kind: str, name: str, known: Iterable[str]) -> BenchError:
    """A one-line error with up to three close names (the full lists have hundreds of entries)."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = " Did you mean " + ", ".join(f"'{c}'" for c in close) + "?" if close else ""
    return BenchError(f"unknown {kind} model '{name}'.{hint}")


def _image_shape(spec: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise BenchError(
            f"model '{spec}' takes images of shape (C, H, W), e.g. (3, 32, 32); got input_shape "
            f"{tuple(input_shape)}"
        )
    return input_shape[0], input_shape[1], input_shape[2]


def build_timm(name: str, *, num_classes: int, input_shape: tuple[int, ...],
               options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a randomly initialised timm model; ``name`` is without the ``timm:`` prefix."""
    import timm

    spec = TIMM_PREFIX + name
    in_channels = _image_shape(spec, input_shape)[0]
    if not name or not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    options = dict(options or {})
    _refuse(spec, options, _TIMM_NOT_OPTIONS)
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options)
    except (TypeError, ValueError) as exc:
        raise _build_error(spec, input_shape, options, exc) from None


def build_torchvision(name: str, *, num_classes: int, input_shape: tuple[int, ...],
                      options: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a randomly initialised torchvision classification model; ``name`` is without the prefix."""
    import torchvision.models as tvm

    spec = TORCHVISION_PREFIX + name
    in_channels = _image_shape(spec, input_shape)[0]
    known = tvm.list_models(module=tvm)  # classification models only
    if name not in known:
        raise _unknown("torchvision", name, known)
    if in_channels != 3:
        raise BenchError(
            f"'{spec}' takes 3-channel images, got input_shape {tuple(input_shape)}; "
            f"use 'timm:{name}' (in_chans is configurable) or a registry model instead"
        )
    options = dict(options or {})
    _refuse(spec, options, _TORCHVISION_NOT_OPTIONS)
    try:
        model = tvm.get_model(name, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as exc:
        raise _build_error(spec, input_shape, options, exc) from None
    _check_swallowed(spec, model, options)
    return model


def _refuse(spec: str, options: Mapping[str, Any], not_options: Mapping[str, str]) -> None:
    for key in options:
        if key in not_options:
            raise BenchError(f"model '{spec}': option '{key}' (a [model] key) is {not_options[key]}")


def _build_error(spec: str, input_shape: tuple[int, ...], options: Mapping[str, Any], exc: Exception) -> BenchError:
    """An unknown keyword names the key; anything else says what was being built."""
    match = _UNEXPECTED.search(str(exc))
    if isinstance(exc, TypeError) and match and match[1] in options:
        return BenchError(f"model '{spec}' has no option '{match[1]}' (a [model] key): {exc}")
    return BenchError(f"could not build '{spec}' for input_shape {tuple(input_shape)} with options "
                      f"{dict(options)}: {type(exc).__name__}: {exc}")


def _check_swallowed(spec: str, model: nn.Module, options: Mapping[str, Any]) -> None:
    """A class whose ``__init__`` takes ``**kwargs`` may drop an option silently: every option must be named
    by that ``__init__`` or by a function of its module that takes ``**kwargs`` (the builder chain, e.g.
    MobileNetV3's ``width_mult`` is read by ``_mobilenet_v3_conf``)."""
    if not _takes_var_keyword(type(model).__init__):
        return  # every option reached a named parameter, or the build failed
    functions = [type(model).__init__] + [f for f in vars(sys.modules[type(model).__module__]).values()
                                          if inspect.isfunction(f) and _takes_var_keyword(f)]
    named = sorted({n for f in functions for n, p in inspect.signature(f).parameters.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                    and n != "self" and n not in _TORCHVISION_NOT_OPTIONS})
    for key in options:
        if key not in named:
            raise BenchError(f"model '{spec}' has no option '{key}' (a [model] key; {type(model).__name__} would "
                             f"ignore it); valid: {', '.join(named)}")


def _takes_var_keyword(fn: Any) -> bool:
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
