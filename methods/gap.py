"""GaP: scheduled grow-and-prune, the cyclic variant (C-GaP).

Ma, Qin, Sun, Hou, Yuan, Xu, Wang, Chen, Jin & Xie, "Effective Model Sparsification by Scheduled
Grow-and-Prune Methods", ICLR 2022, §3 (C-GaP and P-GaP, Fig. 4). Reference code ``boone891214/GaP``
(28582cf), Transformer only: the driver scripts
``scripts/multi_round_gap/script_magnitude_sp_0.9_sequential_multi_round/3_part/10_epochs_per_round/
sequential_gap_distributed_run_3_partition.py`` (and its ``finetune/run_finetune_round_all.sh``), one
training run per step with ``--sp-retrain --sp-prune-before-retrain --restart-training`` and a profile
from ``profiles/3_step_sequential_gap_sp_0.9/`` (``prune_ratios``: the partition pruned before the step;
``masked_layers``: the partitions kept sparse; layers in neither are dense). Pruning is
``prune_utils/admm.py::prune_harden -> weight_pruning -> irregular_pruning``; masks are
``prune_utils/retrain.py::Retrain.generate_mask``; ``fairseq/ddp_trainer.py::load_checkpoint`` drops the
optimizer and LR-scheduler state under ``--restart-training``.

Algorithm (defaults in brackets; the code's is followed where paper and code differ):
1. Split the prunable layers, in registration order, into K contiguous partitions of equal layer counts
   (the reference: 12 Transformer blocks into 3 x 4 or 6 x 2 blocks) [K = ``partitions`` = 4, the
   README's ResNet-50; fewer if the model has fewer layers]. Per-layer keep counts: every layer at the
   target [``distribution`` = uniform, the profiles' one ratio per layer; ``erk`` optional].
2. From the random initialisation, partition 0 is dense and every other layer gets a random mask with its
   count [``init_mask`` = random: ``--retrain-mask-pattern random`` of the first run; ``magnitude``
   prunes the init by |w|, as ``scripts/run_seq_gap.py``].
3. GaP steps i = 0 .. R K (the first step, then R rounds of K steps) [R = ``rounds`` = 10, the scripts'
   ``range(1, 11)``]: the partition k = i mod K is dense. Step i > 0 grows it: its mask becomes all
   ones and its pruned weights re-enter at 0 (their masked value; no re-initialisation). Train T
   [``step_fraction`` = 0.25 of the base run: 10 of the recipe's 40 epochs], with a fresh optimizer and
   the suite's schedule restarted (``--restart-training``), the data stream continued. Then prune the
   partition back: per layer, keep the layer's count of largest |w| (all of its weights ranked).
4. The last step's partition is 0, so after its prune-back the whole model is at the target. Fine-tune
   with masks fixed, fresh optimizer and schedule [``finetune_fraction`` = 1.0: 40 epochs].

Where this differs from the reference: pruning keeps exactly the layer's count by ``torch.topk`` (ties by
position); ``irregular_pruning`` keeps |w| > ``np.percentile(|w|, 100 s)``, ceil((n - 1)(1 - s)) weights
for distinct values: within one weight per layer. The reference trains with Adam and an inverse-sqrt
warm-up schedule restarted every step; here each step restarts the suite's recipe.

Budgets (``pruning_bench.core.budget``): ``native`` runs the schedule above: each step
``step_fraction`` of the budget and the fine-tune ``finetune_fraction`` (R K + 1) T + F, 11.25 budgets
at the defaults. ``equal`` keeps R, K and the T : F ratio and scales every phase to fit: each step gets
T / ((R K + 1) T + F) of the budget, priced at its own mask (a dense partition costs more in the
``flops`` unit, so it gets fewer steps), and the fine-tune the rest. Steps shorter than the suite's
``min_round_epochs`` make the trial ``does_not_fit`` (a GaP step is a round of training between two
prunings). Every training call is checkpointed; the masks between calls follow from the weights, so a
rerun replays the schedule deterministically. P-GaP (K partitions trained in parallel copies) is not
implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pruning_bench.core.budget import DoesNotFit
from pruning_bench.core.context import Context
from pruning_bench.core.masks import global_topk, random_masks
from pruning_bench.core.method import Method
from pruning_bench.core.steps import PlanSetting
from pruning_bench.pruning.layer_densities import keep_counts, layer_densities


@dataclass(frozen=True)
class GaPParams:
    partitions: int = 4             # K (README: ResNet-50 4; Transformer 3 or 6)
    rounds: int = 10                # R rounds of K steps after the first step (scripts: range(1, 11))
    step_fraction: float = 0.25     # T: one step, as a share of the base run (10 of 40 epochs)
    finetune_fraction: float = 1.0  # F: the final fine-tune (40 of 40 epochs)
    distribution: str = "uniform"   # uniform (every layer at the target) | erk
    init_mask: str = "random"       # random | magnitude (of the initial weights)

    def validate(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not self.step_fraction > 0:
            raise ValueError(f"step_fraction must be > 0, got {self.step_fraction}")
        if not self.finetune_fraction > 0:
            raise ValueError(f"finetune_fraction must be > 0, got {self.finetune_fraction}")
        if self.distribution not in ("uniform", "erk"):
            raise ValueError(f"distribution '{self.distribution}' is not one of: uniform, erk")
        if self.init_mask not in ("random", "magnitude"):
            raise ValueError(f"init_mask '{self.init_mask}' is not one of: random, magnitude")

    def n_steps(self, partitions: int) -> int:
        """GaP steps: the first one, then ``rounds`` rounds of one step per partition."""
        return self.rounds * partitions + 1

    def length(self, partitions: int) -> float:
        """The native schedule's length in budgets: (R K + 1) T + F."""
        return self.n_steps(partitions) * self.step_fraction + self.finetune_fraction


def partition_layers(names: Sequence[str], k: int) -> list[list[str]]:
    """``k`` contiguous groups of ``names`` (registration order), sizes differing by at most one, earlier
    groups the larger; ``k`` is capped at the number of layers."""
    k = min(k, len(names))
    size, extra = divmod(len(names), k)
    groups, start = [], 0
    for i in range(k):
        stop = start + size + (i < extra)
        groups.append(list(names[start:stop]))
        start = stop
    return groups


def layer_counts(ctx: Context, distribution: str) -> dict[str, int]:
    """Kept weights per layer at the target sparsity, summing exactly to round((1 - s) N)."""
    shapes = {n: tuple(w.shape) for n, w in ctx.masks.params.items()}
    densities = layer_densities(distribution, shapes, ctx.target_sparsity)
    return keep_counts(shapes, densities, round((1.0 - ctx.target_sparsity) * ctx.masks.total()))


def prune_back(ctx: Context, layers: Sequence[str], counts: dict[str, int]) -> None:
    """Per layer of ``layers``: keep its ``counts`` largest |w| among all its weights, prune the rest."""
    ctx.masks.update({n: global_topk({n: ctx.masks.params[n].detach().abs()}, counts[n])[n] for n in layers})


def grow(ctx: Context, layers: Sequence[str]) -> None:
    """Make ``layers`` dense; their pruned weights re-enter at their masked value, 0."""
    ctx.masks.update({n: torch.ones_like(ctx.masks.masks[n]) for n in layers})


def init_masks(ctx: Context, parts: list[list[str]], counts: dict[str, int], how: str) -> None:
    """Partition 0 dense, every other layer at its count: a random mask, or |w| of the initial weights."""
    sparse = [n for part in parts[1:] for n in part]
    grow(ctx, parts[0])
    if how == "magnitude":
        prune_back(ctx, sparse, counts)
        return
    drawn = random_masks(ctx.masks, counts, ctx.generator)
    ctx.masks.update({n: drawn[n] for n in sparse})


class GaP(Method):
    """C-GaP (Ma et al., ICLR 2022): partitions grown to dense and pruned back by |w|, one at a time."""

    name = "gap"
    Params = GaPParams

    def min_budget_epochs(self, setting: PlanSetting) -> float:
        """Every step at least ``min_round_epochs`` long (``equal`` scales the whole schedule), for K =
        ``partitions``; a model with fewer layers has fewer steps and needs less."""
        p: GaPParams = self.params
        return setting.min_round_epochs * p.length(p.partitions) / p.step_fraction

    def run(self, ctx: Context) -> None:
        p: GaPParams = self.params
        parts = partition_layers(ctx.masks.names, p.partitions)
        counts = layer_counts(ctx, p.distribution)
        n_steps = p.n_steps(len(parts))
        step_share, finetune_share = self._shares(ctx, len(parts))
        ctx.log("gap_partitions", len(parts))
        ctx.log("gap_steps", n_steps)
        ctx.log("gap_step_epochs", step_share * ctx.budget_epochs)
        init_masks(ctx, parts, counts, p.init_mask)
        position = 0  # in the data stream: every call trains on new batches
        for i in range(n_steps):
            k = i % len(parts)
            if i:
                grow(ctx, parts[k])
            steps = ctx.steps_for_fraction(step_share, start_step=position)
            if ctx.spends_budget:
                steps = min(steps, ctx.remaining_steps(start_step=position))
            result = ctx.train(steps=steps, data_start=position, label="train",
                               desc=f"gap step {i + 1}/{n_steps} (partition {k})")
            position += result.steps
            prune_back(ctx, parts[k], counts)
            ctx.log("gap_partition", k, step=i)
            ctx.log("gap_val_acc", ctx.evaluate("val").acc, step=i)
        if ctx.spends_budget:
            steps = ctx.remaining_steps(start_step=position)
        else:
            steps = ctx.steps_for_fraction(finetune_share, start_step=position)
        ctx.train(steps=steps, data_start=position, label="finetune", desc="gap finetune")

    def _shares(self, ctx: Context, partitions: int) -> tuple[float, float]:
        """Budget shares of one step and of the fine-tune; under ``equal`` the native schedule scaled to
        one budget, or DoesNotFit when a step would be shorter than ``min_round_epochs``."""
        p: GaPParams = self.params
        if not ctx.spends_budget:
            return p.step_fraction, p.finetune_fraction
        scale = 1.0 / p.length(partitions)
        step = p.step_fraction * scale
        if step * ctx.budget_epochs < ctx.min_round_epochs * (1 - 1e-9):
            need = ctx.min_round_epochs / step
            raise DoesNotFit(
                f"{p.n_steps(partitions)} grow-and-prune steps ({p.rounds} rounds x {partitions} partitions "
                f"+ 1) of at least {ctx.min_round_epochs:g} epochs and a fine-tune of "
                f"{p.finetune_fraction / p.step_fraction:g} steps need a budget of {need:.4g} epochs; this "
                f"trial has {ctx.budget_epochs:.4g}", min_budget_epochs=need)
        return step, p.finetune_fraction * scale
