"""Magnitude pruning after training, layer by layer, without retraining: the SparseGPT and Wanda papers'
"magnitude" baseline.

Sun, Liu, Bair & Kolter, ICLR 2024, §4 (baselines); Frantar & Alistarh, ICML 2023, §4 (baselines). Reference code: ``locuslab/wanda`` ``lib/prune.py::prune_magnitude`` (L105-125) and
``IST-DASLab/sparsegpt`` ``opt.py::opt_eval`` with ``--gmp`` (L189-194): both rank |W| over the **whole
layer** (one threshold per layer, not per row and not global), and N:M within M consecutive columns.

Algorithm:
1. Train dense for the budget (see ``finetune_fraction``).
2. Every conv and linear weight, as its 2-D matrix ``weight.flatten(1)``: unstructured, prune the layer's
   smallest |w| so that exactly ``round((1 - s) numel)`` stay; N:M (``n`` kept of ``m``), prune the
   M - N smallest |w| of every M consecutive columns (layers whose column count is not a multiple of M stay
   dense). No calibration data, no weight update.
3. ``finetune_fraction`` 0 (no retraining): nothing more; > 0 fine-tunes with the mask fixed.

Where the harness differs from the reference: exact counts with ties by position (the references keep
``|w| > sorted[int(s * numel)]``, pruning one more plus ties); ``n`` counts kept weights (the references'
``prune_n`` counts pruned ones; the same for 2:4 and 4:8); every conv and linear layer is pruned (the
references: the decoder's linear layers). Unlike ``global_magnitude`` (docs/methods.md §5) the ranking is
per layer and there is no fine-tuning by default; unlike ``nm_sparsity`` (§10) a convolution's N:M groups
run along its flattened columns, not across input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from pruning_bench.pruning.post_training import PostTrainingMethod, PostTrainingParams


@dataclass(frozen=True)
class MagnitudeParams(PostTrainingParams):
    pass


class Magnitude(PostTrainingMethod):
    """Layer-wise magnitude pruning after training (the post-training papers' baseline)."""

    name = "magnitude"
    Params = MagnitudeParams
    statistic = None  # no calibration: every layer by |w| (post_training.magnitude_pruned)
