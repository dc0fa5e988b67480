"""Evaluation (never charged to the budget) and BatchNorm recalibration, the same for every method."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pruning_bench.data import DataBundle, iterate_batches


def uses_channels_last(device: torch.device, input_shape: tuple[int, ...]) -> bool:
    """channels_last for image models on CUDA only (measured slower or neutral elsewhere)."""
    return device.type == "cuda" and len(input_shape) == 3


def output_loss(out: torch.Tensor, y: torch.Tensor, *, label_smoothing: float = 0.0,
                reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (B, C) against labels (B,); sequence logits (B, T, V) against targets (B, T)
    are flattened to B*T tokens (the mean is then per token, as nanoGPT's loss)."""
    if out.dim() == 3:
        out, y = out.flatten(0, 1), y.flatten()
    return F.cross_entropy(out, y, label_smoothing=label_smoothing, reduction=reduction)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy, mean loss and top-5 over ``n`` samples; for sequence outputs the accuracy and loss are
    per token (over ``tokens``) and ``ppl`` = exp(mean per-token NLL), the perplexity."""

    acc: float
    loss: float
    top5: float | None
    n: int
    ppl: float | None = None
    tokens: int = 0


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, data: DataBundle, *,
             device: torch.device, batch_size: int = 1024) -> EvalResult:
    """Top-1 (and top-5 where there are more than 5 classes) accuracy and mean loss, in eval mode; for
    sequence outputs (B, T, V) per token, with the perplexity exp(mean per-token NLL)."""
    if len(y) == 0:
        return EvalResult(acc=float("nan"), loss=float("nan"), top5=None, n=0)
    was_training = model.training
    model.eval()
    correct = correct5 = count = 0
    loss_sum = 0.0
    sequence = False
    channels_last = uses_channels_last(device, data.input_shape)
    for xb, yb in iterate_batches(x, y, batch_size=batch_size, mean=data.mean, std=data.std,
                                  device=device, channels_last=channels_last):
        out = model(xb).float()
        if out.dim() == 3:  # per-token logits: count tokens, not sequences
            sequence, out, yb = True, out.flatten(0, 1), yb.flatten()
        count += len(yb)
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
        if data.num_classes > 5:
            correct5 += int((out.topk(5, dim=1).indices == yb[:, None]).any(1).sum())
    model.train(was_training)
    n = len(y)
    if sequence:
        loss = loss_sum / count
        return EvalResult(acc=correct / count, loss=loss, top5=correct5 / count if data.num_classes > 5 else None,
                          n=n, ppl=math.exp(loss), tokens=count)
    return EvalResult(acc=correct / n, loss=loss_sum / n, top5=correct5 / n if data.num_classes > 5 else None, n=n)


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Recompute BatchNorm running statistics from ``batches`` (``torch.optim.swa_utils.update_bn``)."""
    torch.optim.swa_utils.update_bn((x for x, _ in batches), model)
