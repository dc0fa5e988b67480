"""Taylor channel pruning: first-order Taylor importance of BN-followed channels, pruned iteratively.

Molchanov, Mallya, Tyree, Frosio & Kautz, "Importance Estimation for Neural Network Pruning", CVPR 2019,
§3 (Eq. 8: the first-order Taylor importance of a group of parameters, I = (sum_s g_s w_s)^2), §3.2 (the
"FO-BN" variant: a channel's group is its BN scale and shift, I_m = (gamma_m dL/dgamma_m + beta_m
dL/dbeta_m)^2) and §4 (the iterative procedure: importance averaged over minibatches while training,
the least important channels removed every few minibatches, then fine-tuning). Reference code:
``NVlabs/Taylor_pruning`` (``pruning_engine.py``, method 22: Taylor on BN).

Algorithm (the harness's budget split; the paper starts from a trained network):
1. Train the dense network for ``train_fraction`` of the budget.
2. ``prune_steps`` times: train ``prune_fraction / prune_steps`` of the budget while accumulating each
   prunable channel's importance per minibatch (a training-loop callback, no extra passes), average it
   over the step's minibatches, carry it into a running average across steps (``momentum``, below),
   remove the lowest-importance channels globally until the parameter sparsity reaches its share of the
   target (linear in steps: target x i / prune_steps), never more than ``max_layer_prune`` of a layer's
   original channels (as slimming's cap; at least one is kept), and physically shrink the network
   (``pruning_bench.pruning.shrink``: conv -> BN -> conv/linear chains; residual streams are never narrowed).
3. Fine-tune the shrunk network with the rest of the budget.

Schedules: dense training has its own learning-rate schedule; the pruning steps and the final fine-tune
share one restarted schedule (planned at the start of pruning; a fine-tune that can afford more steps
than planned, in the ``flops`` unit, stretches it). Each shrink starts a fresh optimizer (the parameter
shapes change). The data stream continues through every phase. Where the paper removes a fixed number of
neurons every K minibatches, the harness removes what its target schedule needs (same iterative
principle, a fixed end point). Importance is not normalised per layer (the paper's FO-BN criterion).

Momentum (follows the reference code; the paper does not describe it): ``pruning_engine.py`` averages the
criterion across pruning steps, ``a_t = m * a_{t-1} + (1 - m) * c_t`` with ``c_t`` the mean over the
minibatches since the last step and ``m = pruning_momentum`` = 0.9 in every shipped configuration; the
first step takes ``c_1``. The reference zeroes pruned neurons in place, so their running average simply
stops mattering; here the network is physically shrunk, so the running average of the channels a step
keeps is carried over and that of the removed ones dropped. ``momentum = 0`` is the memoryless variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.core.method import Method
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.pruning.channel_select import (
    channel_structure,
    fewest_to_reach,
    keep_indices,
    kept_counts,
    log_channels_kept,
    prune_order,
    require_reachable,
    sparsity_after,
)
from pruning_bench.pruning.shrink import ChannelGroup, shrink


@dataclass(frozen=True)
class TaylorParams:
    train_fraction: float = 0.4     # dense training before pruning starts
    prune_fraction: float = 0.2     # the pruning phase (importance accumulated while training)
    prune_steps: int = 10           # pruning iterations
    max_layer_prune: float = 0.8    # at most this share of a layer's original channels is removed
    momentum: float = 0.9           # running average of the importance across prune steps (reference)

    def validate(self) -> None:
        if not (self.train_fraction > 0 and self.prune_fraction > 0 and self.train_fraction + self.prune_fraction < 1):
            raise ValueError("need train_fraction > 0, prune_fraction > 0 and their sum < 1 (the rest fine-tunes)")
        if self.prune_steps < 1:
            raise ValueError(f"prune_steps must be >= 1, got {self.prune_steps}")
        if not 0 < self.max_layer_prune <= 1:
            raise ValueError(f"max_layer_prune must be in (0, 1], got {self.max_layer_prune}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


class TaylorImportance(TrainCallback):
    """Per channel, the mean over minibatches of (gamma * dL/dgamma + beta * dL/dbeta)^2 (FO-BN)."""

    def __init__(self, model: nn.Module, groups: list[ChannelGroup]) -> None:
        self.bns = {g.bn: model.get_submodule(g.bn) for g in groups}
        self.total = {n: torch.zeros_like(bn.weight, dtype=torch.float64) for n, bn in self.bns.items()}
        self.batches = 0

    @torch.no_grad()
    def after_backward(self, state: StepState) -> None:
        for name, bn in self.bns.items():
            if bn.weight.grad is None or bn.bias.grad is None:
                continue
            self.total[name] += (bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).double() ** 2
        self.batches += 1

    def importance(self) -> dict[str, torch.Tensor]:
        return {n: (t / max(self.batches, 1)).float().cpu() for n, t in self.total.items()}


def carry_importance(running: dict[str, torch.Tensor] | None, current: dict[str, torch.Tensor],
                     momentum: float) -> dict[str, torch.Tensor]:
    """``momentum * running + (1 - momentum) * current`` per channel; the first step takes ``current``."""
    if running is None or momentum == 0:
        return current
    return {bn: momentum * running[bn] + (1 - momentum) * current[bn] for bn in current}


class TaylorChannels(Method):
    """Taylor FO-BN channel importance (Molchanov et al., CVPR 2019): iterative, physically shrunk."""

    name = "taylor_channels"
    Params = TaylorParams
    structured = True

    def run(self, ctx: Context) -> None:
        p: TaylorParams = self.params
        structure = channel_structure(ctx.model, ctx.data.input_shape, self.name)
        total = ctx.masks.total()
        original = {g.bn: g.channels for g in structure.groups}
        require_reachable(self.name, ctx.model, structure.groups, sparsity_after(ctx.model, structure.groups, total),
                          p.max_layer_prune, ctx.target_sparsity)
        data = ctx.steps_for_fraction(p.train_fraction)
        ctx.train(steps=data, desc="dense")
        ctx.log("dense_val_acc", ctx.evaluate("val").acc)
        schedule = ctx.remaining_steps(start_step=data)  # pruning steps + fine-tune share one schedule
        position = 0
        running: dict[str, torch.Tensor] | None = None  # the importance averaged across prune steps
        for i in range(1, p.prune_steps + 1):
            groups = channel_structure(ctx.model, ctx.data.input_shape, self.name).groups
            taylor = TaylorImportance(ctx.model, groups)
            steps = ctx.steps_for_fraction(p.prune_fraction / p.prune_steps, start_step=data)
            ctx.train(steps=steps, start_step=position, schedule_steps=schedule, data_start=data,
                      callbacks=[taylor], desc=f"taylor step {i}/{p.prune_steps}")
            data, position = data + steps, position + steps
            running = carry_importance(running, taylor.importance(), p.momentum)
            keep = self._select(ctx, groups, running, original, total, ctx.target_sparsity * i / p.prune_steps)
            ctx.replace_model(shrink(ctx.model, groups, keep))
            running = {bn: running[bn][keep[bn]] for bn in running}  # the kept channels' averages, re-indexed
            ctx.log("taylor_sparsity", 1 - ctx.masks.total() / total, step=i)
        final = channel_structure(ctx.model, ctx.data.input_shape, self.name).groups
        log_channels_kept(ctx.log, {g.bn: g.channels for g in final}, original)
        ctx.log("pruned_val_acc", ctx.evaluate("val").acc)
        steps = ctx.remaining_steps(start_step=data)
        ctx.train(steps=steps, start_step=position, schedule_steps=max(schedule, position + steps), data_start=data,
                  desc="finetune")

    def _select(self, ctx: Context, groups: list[ChannelGroup], importance: dict[str, torch.Tensor],
                original: dict[str, int], total: int, target: float) -> dict[str, torch.Tensor]:
        """Kept channel indices: the fewest least-important channels whose removal reaches ``target``."""
        order = prune_order(importance, self.params.max_layer_prune, original)
        sparsity_of = sparsity_after(ctx.model, groups, total)
        k = fewest_to_reach(lambda j: sparsity_of(kept_counts(groups, order, j)), len(order), target)
        return keep_indices(groups, order, k)
