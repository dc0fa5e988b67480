"""Models from timm (Wightman, "PyTorch Image Models", 2019) and torchvision, always randomly initialised.

``timm:<name>`` -> ``timm.create_model(name, pretrained=False, num_classes=n, in_chans=c)``;
``torchvision:<name>`` -> ``torchvision.models.get_model(name, weights=None, num_classes=n)`` (classification
models only, 3 input channels). Both libraries are imported lazily: importing timm takes seconds.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from pruning_bench.errors import BenchError

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"


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
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                 **dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise BenchError(f"could not build '{spec}' for input_shape {tuple(input_shape)}: {exc}") from exc


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
    try:
        return tvm.get_model(name, weights=None, num_classes=num_classes, **dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise BenchError(f"could not build '{spec}': {exc}") from exc
