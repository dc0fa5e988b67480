"""SparseGPT: one-shot, layer-wise pruning with OBS weight reconstruction after training.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot", ICML 2023,
§3 (the algorithm: one shared inverse Hessian per layer, lazy batch updates, adaptive mask selection,
the N:M extension), §4 (setup: 128 calibration segments, sequential layer-by-layer pruning, baselines).
Reference code: ``IST-DASLab/sparsegpt`` (commit 147d215): ``sparsegpt.py::SparseGPT.add_batch`` (L32-46),
``SparseGPT.fasterprune`` (L48-144), ``opt.py::opt_sequential`` (L30-128, the sequential driver); its
convolution inputs are unfolded as in ``IST-DASLab/gptq`` ``gptq.py::GPTQ.add_batch``.

Algorithm (defaults from ``opt.py``'s arguments):
1. Train dense for the budget (see ``finetune_fraction``).
2. For each conv/linear layer in forward order (``pruning_bench/pruning/post_training.py``): run the
   ``calibration_samples`` (128) samples through the partly pruned model and sum the layer's unfolded
   inputs X into H = 2 X^T X / n (n = samples; the scale does not change the result).
3. Dead inputs (H_jj = 0): H_jj = 1, column j of W set to 0. Dampen: H += ``percdamp`` (0.01) *
   mean(diag H) * I. U = upper Cholesky factor of H^-1 (Cholesky, ``cholesky_inverse``, Cholesky).
4. Columns in blocks of ``blocksize`` (128). Unstructured: at each block's start, prune the block's
   smallest w^2 / U_jj^2 over all its rows and columns at once (the block's weights as updated so far).
   N:M: at every M-th column, prune the M - N smallest w^2 / U_jj^2 of each row's next M columns.
5. Column by column within a block: q = w with pruned entries 0, err = (w - q) / U_jj, every later
   column c of the block -= err * U_jc; after the block, the columns right of it -= Err_block @ U[block,
   right] (lazy batch update). The pruned layer and its mask replace the dense one.
6. ``finetune_fraction`` 0 (the paper: no retraining): nothing more; > 0 fine-tunes with the mask fixed.

Where the harness differs from the reference:
- Counts: the reference prunes ``int(s * n_b) + 1`` weights per block (``<=`` against sorted index
  ``int(s * n_b)``), plus ties; here each layer prunes exactly ``numel - round((1 - s) numel)``, split
  over the blocks by cumulative rounding, ties by position.
- N:M notation: ``n`` is the number **kept** (as ``nm_sparsity``); the reference's ``--prunen`` is the
  number pruned. 2:4 and 4:8 are the same either way. ``blocksize`` must be a multiple of M (the
  reference starts groups at block-relative multiples of M). Layers whose column count is not a multiple
  of M stay dense.
- Sequential granularity: one layer at a time; ``opt.py`` calibrates all linear layers of a transformer
  block on the block's dense inputs, then prunes them together (``llama.py --true-sequential``, L82-92,
  off by default, goes sublayer group by group, the closest to this).
- Statistics and the solve in float64 on the trial's device (the reference: float32 on the GPU). Every
  conv and linear layer is pruned, first layer and classifier included (the reference: the decoder's
  linear layers only; its ``add_batch`` has no conv unfolding, GPTQ's has). Calibration data: training
  samples of the trial's data set, drawn with their own seed and augmented like training batches (the
  reference: 128 random 2048-token C4 segments, seed 0). BatchNorm in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.errors import BenchError
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
class SparseGPTParams(CalibratedParams):
    blocksize: int = 128   # columns per lazy-update block (the adaptive mask selection's block)
    percdamp: float = 0.01  # dampening, as a fraction of the mean Hessian diagonal

    def validate(self) -> None:
        super().validate()
        if self.blocksize < 1:
            raise ValueError(f"blocksize must be >= 1, got {self.blocksize}")
        if self.n and self.blocksize % self.m:
            raise ValueError(f"blocksize must be a multiple of m for N:M, got blocksize {self.blocksize} "
                             f"with m {self.m}")
        if not self.percdamp > 0:
            raise ValueError(f"percdamp must be > 0 (it keeps the Hessian invertible), got {self.percdamp}")


def inverse_factor(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """The upper Cholesky factor of the dampened Hessian's inverse (dead inputs' diagonal set to 1)."""
    h = hessian.clone()
    h.diagonal()[h.diagonal() == 0] = 1.0
    h.diagonal().add_(percdamp * h.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


def _prune_block(w: torch.Tensor, u: torch.Tensor, pruned: torch.Tensor, n: int, m: int,
                 count: int) -> torch.Tensor:
    """Prune one block in place (``w``, ``pruned``: the block's columns; ``u``: its part of U) with OBS
    updates inside it; returns the block's scaled errors for the lazy update of later columns."""
    d = u.diagonal()
    if not n:
        pruned |= smallest_per_row((w.square() / d.square()).reshape(1, -1), count).reshape(w.shape)
    errors = torch.zeros_like(w)
    for i in range(w.shape[1]):
        if n and i % m == 0:
            pruned[:, i:i + m] = nm_pruned(w[:, i:i + m].square() / d[i:i + m].square(), n, m)
        q = w[:, i].masked_fill(pruned[:, i], 0.0)
        errors[:, i] = (w[:, i] - q) / d[i]
        w[:, i:] -= errors[:, i:i + 1] * u[i:i + 1, i:]
        w[:, i] = q
    return errors


def sparsegpt_matrix(weight: torch.Tensor, hessian: torch.Tensor, *, prune: int, n: int = 0, m: int = 0,
                     blocksize: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on a 2-D weight [rows, cols] with its Hessian [cols, cols], in float64: the updated
    weight and the pruned entries. Unstructured: ``prune`` weights in all (split over the blocks);
    N:M when ``n``: ``m - n`` pruned in every ``m`` consecutive columns."""
    w, h = weight.double().clone(), hessian.double()
    w[:, h.diagonal() == 0] = 0.0
    u = inverse_factor(h, percdamp)
    cols = w.shape[1]
    starts = list(range(0, cols, blocksize))
    counts = spread(prune, [min(blocksize, cols - s) for s in starts])
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for start, count in zip(starts, counts):
        stop = min(start + blocksize, cols)
        block = w[:, start:stop].clone()
        errors = _prune_block(block, u[start:stop, start:stop], pruned[:, start:stop], n, m, count)
        w[:, start:stop] = block
        w[:, stop:] -= errors @ u[start:stop, stop:]
    return w, pruned


class SparseGPT(PostTrainingMethod):
    """SparseGPT (Frantar & Alistarh, ICML 2023): layer-wise OBS pruning and reconstruction after training."""

    name = "sparsegpt"
    Params = SparseGPTParams
    statistic = "hessian"

    def prune_layer(self, ctx: Context, name: str, module: nn.Module,
                    stats: LayerInputs) -> tuple[torch.Tensor, torch.Tensor]:
        p: SparseGPTParams = self.params
        weight = module.weight.detach().flatten(1)
        hessians = stats.hessian()  # one per group of a grouped convolution
        parts = weight.reshape(hessians.shape[0], -1, weight.shape[1])
        counts = spread(prune_count(ctx.target_sparsity, weight.numel()), [parts[0].numel()] * len(parts))
        try:
            done = [sparsegpt_matrix(w, h, prune=k, n=p.n, m=p.m, blocksize=p.blocksize, percdamp=p.percdamp)
                    for w, h, k in zip(parts, hessians, counts)]
        except torch.linalg.LinAlgError:
            raise BenchError(f"sparsegpt: the dampened Hessian of layer '{name}' is not positive definite; "
                             f"raise percdamp (now {p.percdamp})") from None
        return torch.cat([w for w, _ in done]), torch.cat([q for _, q in done])
