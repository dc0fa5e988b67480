"""SynFlow: iterative synaptic flow pruning at initialisation, without data.

Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by iteratively conserving
synaptic flow", NeurIPS 2020, §6 and Algorithm 1. Reference code ``ganguli-lab/Synaptic-Flow``
(``Pruners/pruners.py::SynFlow``, ``prune.py::prune_loop``), which this follows.

Algorithm (Algorithm 1):
1. Linearise: every entry of the model's state (weights, biases, BN affine parameters and running
   statistics) replaced by its absolute value; BN in eval mode, as the reference's ``prune_loop`` does
   (``model.eval()``).
2. Feed one all-ones input (batch of 1) and take R = the sum of the outputs (the synaptic flow).
3. Score every prunable weight by |dR/dtheta * theta| (pruned weights are zero and score 0).
4. Keep the global top (1 - s_e) of the weights, s_e the schedule's sparsity at iteration e:
   exponential (default), density_e = density^((e + 1) / E), or linear; E = 100 iterations.
5. After E iterations the mask is at the target; train the sparse network with the rest of the budget.

Where the harness differs: the linearised copy is scored in float64 (the reference's commented-out
``model.double()``) so R cannot overflow in deeper nets; the ranking is exact top-k among the still
active weights (ties by position) where the reference keeps ``score > kthvalue``, so the achieved
sparsity equals the target. Each iteration is charged as one training pass of one sample (label
``scoring``): E passes in all, negligible next to training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.core.masks import MaskSet, prunable_weights
from pruning_bench.core.method import Method


@dataclass(frozen=True)
class SynFlowParams:
    iterations: int = 100
    schedule: str = "exponential"   # exponential | linear

    def validate(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.schedule not in ("exponential", "linear"):
            raise ValueError(f"schedule '{self.schedule}' is not one of: exponential, linear")


def schedule_sparsity(target: float, iteration: int, iterations: int, schedule: str) -> float:
    """The sparsity after pruning iteration ``iteration`` (0-based) of ``iterations``."""
    progress = (iteration + 1) / iterations
    if schedule == "exponential":
        return 1.0 - (1.0 - target) ** progress
    return target * progress


def synflow_scores(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """|dR/dtheta * theta| of every prunable weight, R the summed output of the linearised network (all
    state in absolute value, eval mode, float64) on an all-ones input of batch 1."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    device = next(net.parameters()).device
    net.zero_grad(set_to_none=True)
    net(torch.ones((1, *input_shape), dtype=torch.float64, device=device)).sum().backward()
    return {n: (w.grad * w).detach().abs().float() for n, w in prunable_weights(net).items()}


def synflow_prune(ctx: Context, masks: MaskSet, p: SynFlowParams) -> None:
    """The pruning loop: score, prune to the schedule's sparsity, E times (each charged)."""
    for e in range(p.iterations):
        scores = synflow_scores(ctx.model, ctx.data.input_shape)
        ctx.charge_passes(1, label="scoring")
        masks.prune_to_global(scores, schedule_sparsity(ctx.target_sparsity, e, p.iterations, p.schedule),
                              among_active=True)


class SynFlow(Method):
    """SynFlow (Tanaka et al., NeurIPS 2020): data-free iterative pruning at init, then train."""

    name = "synflow"
    Params = SynFlowParams

    def run(self, ctx: Context) -> None:
        synflow_prune(ctx, ctx.masks, self.params)
        ctx.log("pruned_sparsity", ctx.masks.sparsity())
        ctx.train(steps=ctx.remaining_steps(), desc="synflow")
