"""N:M fine-grained structured sparsity (default 2:4) by magnitude: at most N non-zeros in every group
of M consecutive weights along the input dimension, the pattern sparse tensor cores accelerate.

Mishra et al., "Accelerating Sparse Deep Neural Networks" (NVIDIA, arXiv 2104.08378), §3 (2:4 along the
input dimension, magnitude selection, then retraining; the ASP recipe); Zhou et al., "Learning N:M
Fine-grained Structured Sparse Neural Networks From Scratch", ICLR 2021, §3 (N:M notation, groups along
the input channels of a convolution). Reference code: NVIDIA ``apex/contrib/sparsity`` (ASP, ``m4n2_1d``).

Algorithm:
1. Groups: a linear weight (out, in) is grouped along ``in``; a convolution (out, in, *kernel) along its
   input channels at each (out, kernel position), as ASP permutes it. A layer whose input size is not a
   multiple of M cannot carry the pattern and stays dense (logged ``nm_dense_layers``; e.g. a first
   convolution with one input channel).
2. ``oneshot`` (default): train dense for ``1 - finetune_fraction`` of the budget, keep the N largest |w|
   of every group, fine-tune with the mask fixed for the rest (schedule restarted, data stream continued).
   ``gradual``: from M:M down to N:M one kept weight per group at a time, the steps spread evenly over
   ``gradual_begin .. gradual_end`` of one run of the budget, magnitude-selected among the kept weights.
3. The target sparsity is N:M's own, 1 - N/M (50% for 2:4): the method runs only there; the achieved
   sparsity over every conv and linear weight is lower by the layers that stay dense.

Latency: the runner times the masked model; on a CUDA device that supports semi-structured kernels
(compute capability 8.0+) it also times a copy whose eligible linear layers hold
``torch.sparse.to_sparse_semi_structured`` weights (``latency_semi_structured_ms``), and otherwise says
why not in the tag ``latency_note``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pruning_bench.core.context import Context
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.method import Method
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.pruning.one_shot import train_prune_finetune


@dataclass(frozen=True)
class NMParams:
    n: int = 2
    m: int = 4
    schedule: str = "oneshot"        # oneshot | gradual
    finetune_fraction: float = 0.5   # oneshot: share of the budget for fine-tuning
    gradual_begin: float = 0.2
    gradual_end: float = 0.75

    def validate(self) -> None:
        if not 0 < self.n < self.m:
            raise ValueError(f"need 0 < n < m, got {self.n}:{self.m}")
        if self.schedule not in ("oneshot", "gradual"):
            raise ValueError(f"schedule '{self.schedule}' is not one of: oneshot, gradual")
        if not 0 < self.finetune_fraction < 1:
            raise ValueError(f"finetune_fraction must be in (0, 1), got {self.finetune_fraction}")
        if not 0 <= self.gradual_begin < self.gradual_end <= 1:
            raise ValueError("need 0 <= gradual_begin < gradual_end <= 1")


def supports_nm(weight: torch.Tensor, m: int) -> bool:
    """Whether a weight's input dimension (dim 1) splits into groups of ``m``."""
    return weight.dim() >= 2 and weight.shape[1] % m == 0


def nm_mask(weight: torch.Tensor, n: int, m: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive input weights (among ``active`` ones)."""
    moved = weight.detach().abs().movedim(1, -1)  # (out, *kernel, in): groups along the input dimension
    scores = moved.float()
    if active is not None:
        scores = scores.masked_fill(~active.movedim(1, -1), float("-inf"))
    groups = scores.reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    return keep.reshape(moved.shape).movedim(-1, 1)


def prune_nm(masks: MaskSet, n: int, m: int) -> list[str]:
    """N:M masks on every layer that allows it (pruned weights never return); the dense ones' names."""
    new, dense = {}, []
    for name, weight in masks.params.items():
        if supports_nm(weight, m):
            new[name] = nm_mask(weight, n, m, masks.masks[name]) & masks.masks[name]
        else:
            dense.append(name)
    masks.update(new)
    return dense


class GradualNM(TrainCallback):
    """Steps from (M-1):M down to N:M, one kept weight per group per step, at evenly spaced steps."""

    def __init__(self, masks: MaskSet, n: int, m: int, begin: int, end: int) -> None:
        self.masks, self.n, self.m = masks, n, m
        stages = m - n
        self.at = {begin + round(i * (end - begin) / max(stages - 1, 1)): m - 1 - i for i in range(stages)}

    def on_step_end(self, state: StepState) -> None:
        keep = self.at.get(state.step + 1)
        if keep is not None:
            prune_nm(self.masks, keep, self.m)


class NMSparsity(Method):
    """N:M (2:4) magnitude sparsity along the input dimension, one-shot + fine-tune or gradual."""

    name = "nm_sparsity"
    Params = NMParams
    granularity = "semi_structured"

    @classmethod
    def target_sparsities(cls, params: Any, requested: Sequence[float]) -> list[float]:
        return [1.0 - params.n / params.m]

    def run(self, ctx: Context) -> None:
        p: NMParams = self.params
        dense = [n for n, w in ctx.masks.params.items() if not supports_nm(w, p.m)]
        ctx.log("nm_dense_layers", len(dense))
        if p.schedule == "gradual":
            total = ctx.remaining_steps()
            cb = GradualNM(ctx.masks, p.n, p.m, round(p.gradual_begin * total), round(p.gradual_end * total))
            ctx.train(steps=total, callbacks=[cb], desc="nm gradual")
            prune_nm(ctx.masks, p.n, p.m)  # a no-op after the last stage; a run cut short still ends at N:M
            return

        def prune() -> None:
            prune_nm(ctx.masks, p.n, p.m)
            ctx.log("pruned_val_acc", ctx.evaluate("val").acc)

        train_prune_finetune(ctx, prune, finetune_fraction=p.finetune_fraction, names=("dense", "nm finetune"))
