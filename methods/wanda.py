"""Wanda: pruning by weights and activations after training, per output, without weight updates.

Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024,
§3 (metric |W_ij| * ||X_j||_2, comparison group per output). Reference code: ``locuslab/wanda`` (commit
8e8fc87): ``lib/layerwrapper.py::WrappedGPT.add_batch`` (L22-35, ``scaler_row``), ``lib/prune.py::
prune_wanda`` (L127-210: metric L166, N:M L169-174, per-row sort L176/L199-200, sequential L204-207),
``main.py`` (``--nsamples`` 128, N:M only at sparsity 0.5, L52-53).

Algorithm:
1. Train dense for the budget (see ``finetune_fraction``).
2. For each conv/linear layer in forward order (``pruning_bench/pruning/post_training.py``): run the
   ``calibration_samples`` (128) samples through the partly pruned model; ``scaler_row`` = the mean over
   samples of each input column's squared norm (summed over tokens / unfolded positions).
3. Score S_ij = |W_ij| * sqrt(scaler_row_j).
4. Unstructured: in every output row (the comparison group) prune the smallest S; N:M: in every row's
   M consecutive columns prune the M - N smallest S. Weights are not updated.
5. ``finetune_fraction`` 0 (the paper: no retraining): nothing more; > 0 fine-tunes with the mask fixed.

Where the harness differs from the reference:
- Counts: the reference prunes ``int(s * cols)`` per row (stable sort, first indices); here the layer
  prunes exactly ``numel - round((1 - s) numel)``, split over the rows by cumulative rounding (the same as
  the reference when ``s * cols`` is a whole number), ties by position within a row.
- N:M notation: ``n`` is the number **kept** (as ``nm_sparsity``); the reference's ``prune_n`` (from
  ``--sparsity_type 2:4``) is the number pruned per group; the same for 2:4 and 4:8. Layers whose column
  count is not a multiple of M stay dense. ``--use_variant`` (the appendix's cumulative-sum rule) is not
  implemented.
- Sequential granularity: one layer at a time; the reference collects all linear layers of a transformer
  block on the block's dense inputs, then prunes them together. Statistics in float64.
- Every conv and linear layer is pruned (the reference: the decoder's linear layers); a convolution's
  columns are its unfolded inputs. Calibration data: training samples, own seed, augmented like training
  batches (the reference: 128 C4 segments of 2048 tokens, seed 0). BatchNorm in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.pruning.post_training import (
    CalibratedParams,
    LayerInputs,
    PostTrainingMethod,
    nm_pruned,
    prune_count,
    smallest_per_row,
    spread,
)


@dataclass(frozen=True)
class WandaParams(CalibratedParams):
    pass


def wanda_pruned(weight: torch.Tensor, scaler_row: torch.Tensor, sparsity: float, n: int = 0,
                 m: int = 0) -> torch.Tensor:
    """The pruned entries of a 2-D weight [rows, cols] under Wanda's metric, ``scaler_row`` [rows or 1,
    cols] the mean squared input norms."""
    metric = weight.abs() * scaler_row.sqrt()
    if n:
        return nm_pruned(metric, n, m)
    rows, cols = metric.shape
    return smallest_per_row(metric, spread(prune_count(sparsity, rows * cols), [cols] * rows))


class Wanda(PostTrainingMethod):
    """Wanda (Sun et al., ICLR 2024): |W| * input norm, pruned per output row, after training."""

    name = "wanda"
    Params = WandaParams
    statistic = "norms"

    def prune_layer(self, ctx: Context, name: str, module: nn.Module,
                    stats: LayerInputs) -> tuple[None, torch.Tensor]:
        p: WandaParams = self.params
        weight = module.weight.detach().flatten(1)
        scaler = stats.scaler_row()  # [groups, cols]: each row reads its group's inputs
        per_row = scaler.repeat_interleave(weight.shape[0] // scaler.shape[0], dim=0)
        return None, wanda_pruned(weight, per_row, ctx.target_sparsity, p.n, p.m)
