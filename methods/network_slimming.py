"""Network slimming: L1 on BN scaling factors, prune channels by one global threshold, fine-tune.

Liu, Li, Shen, Huang, Yan & Zhang, "Learning Efficient Convolutional Networks through Network Slimming",
ICCV 2017, §3 (channel-level sparsity via BN scaling factors) and §4.3 (training, pruning, fine-tuning).
Reference code: ``liuzhuang13/slimming`` (Lua) and ``Eric-mingjie/rethinking-network-pruning``
(``cifar/network-slimming``: ``main.py::updateBN``, ``vggprune.py``, ``resprune.py``).

Algorithm:
1. Every BN scaling factor gamma starts at 0.5 (reference ``_initialize_weights``).
2. Sparsity training with the suite's recipe: after each backward, lambda * sign(gamma) is added to every
   BN weight's gradient (``updateBN``), via a training-loop callback. lambda: 1e-4 for networks without
   residual additions (VGG-like), 1e-5 for residual ones (ResNet), unless ``l1_lambda`` is given.
3. Prune: |gamma| of every prunable channel (``pruning_bench.pruning.shrink``: conv -> BN -> ... -> conv/linear
   chains; residual streams are never narrowed) in one vector, one global threshold. At most
   ``max_layer_prune`` of a layer's channels are pruned, and at least one is always kept (docs/methods.md pitfall 8).
   The cap is the paper's remedy for emptied layers (§4.5: at most 50% per layer in multi-pass
   pruning). 50% cannot reach 80-90% parameter sparsity on the default CNN, so the default cap is 80%: a
   layer keeps at least a fifth of its channels (the measurement behind it: docs/methods.md §6d).
   - ``channel_fraction`` > 0 (the paper's ``percent``): thre = sorted[int(total * fraction)], channels
     with |gamma| <= thre are pruned (the reference's ``gt(thre)`` keep rule).
   - default (``channel_fraction`` = 0): the harness's target is a *parameter* sparsity; the fewest
     smallest-|gamma| channels are pruned whose removal reaches at least that sparsity of conv/linear
     weights. A target the structure cannot reach fails the trial before any training.
4. Build the physically smaller network (slicing; no Torch-Pruning) and ``ctx.replace_model`` it.
5. Fine-tune without the L1 term, schedule restarted, data stream continued (new batches, not a replay
   of the first epochs); the final epoch is reported (never the best one).

Budgets (in the budget's unit): ``equal``: sparsity training gets ``1 - finetune_fraction`` of the
budget, fine-tuning the rest (default 50/50; in the ``flops`` unit the shrunk net's steps are cheaper,
so it gets more of them). ``native``: sparsity training for the full budget, then fine-tuning for
``native_finetune`` x the budget (default 1.0: the paper fine-tunes with the same setting as training;
the rethinking port uses 40 of 160 epochs, 0.25).

Where the references differ: the global threshold is taken over prunable channels only (in the VGG
reference every BN is prunable; in ``resprune.py`` the residual-stream BNs are "selected", not removed).
Pruned channels' BN shift beta is dropped, not folded into the next layer (as the reference).
Logged: ``channels_kept.<bn>`` per layer, ``channels_kept_fraction``, ``min_channels_kept_fraction``
(the thinnest layer's share), ``pruned_val_acc``; the runner adds ``latency_dense_ms`` (the unpruned
model, same protocol as ``latency_ms`` of the shrunk one) for every structured method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from pruning_bench.pruning.one_shot import train_prune_finetune
from pruning_bench.pruning.shrink import ChannelGroup, shrink

LAMBDA_PLAIN, LAMBDA_RESIDUAL = 1e-4, 1e-5  # paper §4.3: VGG 1e-4; ResNet-164 / DenseNet-40 1e-5


@dataclass(frozen=True)
class NetworkSlimmingParams:
    l1_lambda: float | None = None   # None: 1e-4 without residual additions, 1e-5 with
    gamma_init: float = 0.5
    channel_fraction: float = 0.0    # > 0: prune this fraction of channels (ignores the target sparsity)
    max_layer_prune: float = 0.8     # at most this fraction of a layer's channels (one is always kept)
    finetune_fraction: float = 0.5   # equal: share of the budget for fine-tuning
    native_finetune: float = 1.0     # native: fine-tuning length in budgets (paper 1.0)

    def validate(self) -> None:
        if self.l1_lambda is not None and (isinstance(self.l1_lambda, bool) or self.l1_lambda < 0):
            raise ValueError(f"l1_lambda must be a number >= 0, got {self.l1_lambda!r}")
        if not 0 <= self.channel_fraction < 1:
            raise ValueError(f"channel_fraction must be in [0, 1), got {self.channel_fraction}")
        if not 0 < self.max_layer_prune <= 1:
            raise ValueError(f"max_layer_prune must be in (0, 1], got {self.max_layer_prune}")
        if not 0 < self.finetune_fraction < 1:
            raise ValueError(f"finetune_fraction must be in (0, 1), got {self.finetune_fraction}")
        if self.native_finetune < 0:
            raise ValueError(f"native_finetune must be >= 0, got {self.native_finetune}")


class BNL1(TrainCallback):
    """Adds lambda * sign(gamma) to every BN weight's gradient (subgradient of lambda * sum |gamma|)."""

    def __init__(self, batchnorms: Sequence[nn.Module], lam: float) -> None:
        self.weights = [bn.weight for bn in batchnorms if bn.weight is not None]
        self.lam = lam

    @torch.no_grad()
    def after_backward(self, state: StepState) -> None:
        for w in self.weights:
            if w.grad is not None:
                w.grad.add_(torch.sign(w), alpha=self.lam)


class NetworkSlimming(Method):
    """Network slimming (Liu et al., ICCV 2017): structured, the model is physically shrunk."""

    name = "network_slimming"
    Params = NetworkSlimmingParams
    structured = True

    def run(self, ctx: Context) -> None:
        p: NetworkSlimmingParams = self.params
        structure = channel_structure(ctx.model, ctx.data.input_shape, self.name)
        total = ctx.masks.total()
        sparsity_of = sparsity_after(ctx.model, structure.groups, total)
        if not p.channel_fraction:
            require_reachable(self.name, ctx.model, structure.groups, sparsity_of, p.max_layer_prune,
                              ctx.target_sparsity)
        bns = [ctx.model.get_submodule(n) for n in structure.batchnorms]
        with torch.no_grad():
            for bn in bns:
                bn.weight.fill_(p.gamma_init)
        lam = p.l1_lambda if p.l1_lambda is not None else (LAMBDA_RESIDUAL if structure.residual else LAMBDA_PLAIN)
        ctx.log("l1_lambda", lam)

        def prune() -> None:  # select channels by one global |gamma| threshold, shrink the network
            ctx.log("sparse_val_acc", ctx.evaluate("val").acc)
            keep = self._select(ctx, structure.groups, sparsity_of)
            ctx.replace_model(shrink(ctx.model, structure.groups, keep))
            log_channels_kept(ctx.log, {g.bn: len(keep[g.bn]) for g in structure.groups},
                              {g.bn: g.channels for g in structure.groups})
            ctx.log("pruned_val_acc", ctx.evaluate("val").acc)

        train_prune_finetune(ctx, prune, finetune_fraction=p.finetune_fraction, native_finetune=p.native_finetune,
                             callbacks=[BNL1(bns, lam)], names=("sparsity", "finetune"))

    def _select(self, ctx: Context, groups: Sequence[ChannelGroup],
                sparsity_of: Callable[[dict], float]) -> dict[str, torch.Tensor]:
        """Kept channel indices per group from one global |gamma| threshold."""
        gammas = {g.bn: ctx.model.get_submodule(g.bn).weight.detach().cpu() for g in groups}
        order = prune_order(gammas, self.params.max_layer_prune)
        if self.params.channel_fraction:
            flat = torch.cat(list(gammas.values())).abs().sort().values
            thre = float(flat[min(int(len(flat) * self.params.channel_fraction), len(flat) - 1)])
            k = sum(1 for _, _, v in order if v <= thre)
        else:
            k = fewest_to_reach(lambda j: sparsity_of(kept_counts(groups, order, j)), len(order),
                                ctx.target_sparsity)
        return keep_indices(groups, order, k)
