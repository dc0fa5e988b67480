"""SNIP: single-shot network pruning at initialisation.

Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019,
§4 (connection sensitivity) and §5 (experiments). Reference code: ``namhoonlee/snip-public``;
cross-checked against ``ganguli-lab/Synaptic-Flow`` (``Pruners/pruners.py::SNIP``).

Algorithm:
1. At initialisation, run ``score_batches`` training mini-batches of ``score_batch_size`` examples with
   BatchNorm in eval mode (both reference implementations do) and accumulate dL/dw.
2. Connection sensitivity s = |g * w| (never |g| alone, RigL App. M.3), normalised by its sum over every
   prunable tensor (does not change the ranking).
3. Keep the global top-k, k = round((1 - sparsity) * N); the mask is fixed for the rest of training.
4. Train the sparse network for the whole budget.

Choices where the references differ (recorded as parameters and in the docstring):
- Prunable set: conv and linear weights only, as Synaptic-Flow does; the official TF code also ranks
  biases (zero at init, so they are all pruned), which the harness's sparsity definition excludes.
- The same initialisation is trained (Synaptic-Flow / OpenLTH); the official code trains a second,
  independently drawn initialisation. Frankle et al. (ICLR 2021) found SNIP insensitive to this.
- Scoring data: ``score_batches`` x ``score_batch_size`` random training examples (official: one batch
  of 100, 128 for VGG); Synaptic-Flow uses 10 per class. Scoring is a forward + backward pass over
  training data, charged like a training step (label ``scoring``); training gets the rest of the budget.
  In the ``flops`` unit the sparse network's steps are cheaper, so SNIP trains more steps than dense
  for the same FLOPs (the comparison RigL §4 makes).
- Exact-k selection with ``torch.topk`` (ties broken by position), so achieved sparsity equals the target.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from pruning_bench.core.context import Context
from pruning_bench.core.evaluation import output_loss
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.method import Method


@dataclass(frozen=True)
class SnipParams:
    score_batch_size: int = 128
    score_batches: int = 1
    bn_eval: bool = True  # BatchNorm in inference mode while scoring, as both reference codes do

    def validate(self) -> None:
        if self.score_batch_size < 1 or self.score_batches < 1:
            raise ValueError("score_batch_size and score_batches must be >= 1")


def snip_scores(model: torch.nn.Module, masks: MaskSet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                *, bn_eval: bool = True) -> dict[str, torch.Tensor]:
    """Normalised connection sensitivity |dL/dw * w| per prunable tensor, gradients summed over batches."""
    was_training = model.training
    model.train(not bn_eval)
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        output_loss(model(x), y).backward()
    scores = {n: (p.grad * p.detach()).abs() if p.grad is not None else torch.zeros_like(p)
              for n, p in masks.params.items()}
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    total = sum(float(s.sum()) for s in scores.values())
    return {n: s / total for n, s in scores.items()} if total > 0 else scores


class Snip(Method):
    """SNIP (Lee et al., ICLR 2019): prune once at init by |g * w|, then train the sparse net."""

    name = "snip"
    Params = SnipParams

    def run(self, ctx: Context) -> None:
        p: SnipParams = self.params
        batches = ctx.batches(p.score_batches, batch_size=p.score_batch_size, label="scoring")
        scores = snip_scores(ctx.model, ctx.masks, batches, bn_eval=p.bn_eval)
        ctx.masks.prune_to_global(scores, ctx.target_sparsity, among_active=False)
        ctx.log("pruned_sparsity", ctx.masks.sparsity())
        ctx.train(steps=ctx.run_steps(), desc="snip")
