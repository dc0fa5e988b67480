"""Inference and training FLOPs, counted the way ``torch.utils.flop_counter`` counts them.

One convention for every method: a multiply-add is 2 FLOPs (so CIFAR ResNet-20 at 32x32 is about
81 MFLOPs). Effective FLOPs of a masked model scale each prunable layer's FLOPs by its density (the
unstructured-sparsity convention of RigL App. H); layers the counter sees but the masks do not cover
are counted dense. Training FLOPs per sample are 3x the forward FLOPs (backward = 2x forward, App. H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruning_bench.core.budget import TRAIN_FLOPS_PER_FORWARD
from pruning_bench.core.masks import prunable_weights

__all__ = ["TRAIN_FLOPS_PER_FORWARD", "FlopProfile", "profile_flops"]


@dataclass(frozen=True)
class FlopProfile:
    """Per-sample forward FLOPs of a model: in total and for each prunable weight's layer."""

    total: float
    per_layer: dict[str, float]  # keyed like MaskSet names ("layer1.0.conv1.weight")

    def effective(self, density: dict[str, float]) -> float:
        """FLOPs when each prunable layer only computes its kept weights."""
        other = self.total - sum(self.per_layer.values())
        return other + sum(f * density.get(name, 1.0) for name, f in self.per_layer.items())


@torch.no_grad()
def profile_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu",
                  weight_names: list[str] | None = None, dtype: torch.dtype = torch.float32) -> FlopProfile:
    """Count one sample's forward FLOPs with ``FlopCounterMode``, per module, in eval mode, on zeros of
    ``dtype`` (int64 for token ids: one sample is then one sequence of ``input_shape[0]`` tokens)."""
    was_training = model.training
    model.eval()
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    with FlopCounterMode(display=False, depth=None) as counter:
        model(x)
    model.train(was_training)
    counts = {key: float(sum(ops.values())) for key, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    names = weight_names or list(prunable_weights(model))
    per_layer = {w: counts.get(f"{root}.{w.removesuffix('.weight')}", 0.0) for w in names}
    return FlopProfile(total=counts.get("Global", 0.0), per_layer=per_layer)
