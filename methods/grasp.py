"""GraSP: gradient signal preservation, pruning at initialisation by a Hessian-gradient product.

Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020,
§4 (Eq. 8, S(-theta) = -theta * Hg) and Algorithm 1. Reference code ``alecwangcq/GraSP``
(``pruner/GraSP.py``) and its port in ``ganguli-lab/Synaptic-Flow`` (``Pruners/pruners.py::GraSP``),
which this follows.

Algorithm:
1. On ``score_batches`` training batches (BN in eval mode, as Synaptic-Flow's ``prune_loop``), logits
   divided by the temperature T = 200: g = sum over batches of dL/dtheta, held fixed (no graph).
2. Hg: for each batch, the gradient with its graph, then (g . grad).backward() accumulates H g.
3. Score theta * Hg, normalised by |sum of all scores| + 1e-10 (the ranking is unchanged).
4. Sign convention, as both reference codes: the weights with the *largest* theta * Hg are kept (the
   original removes the largest -theta * Hg, Synaptic-Flow keeps the largest theta * Hg: the same
   masks). These are the weights whose removal would reduce the gradient flow most (removing a weight
   changes the flow by about -theta * Hg), so what is pruned is what reduces gradient flow the least or
   increases it. Exact global top-k (ties by position).
5. Train the sparse network with the rest of the budget.

Charged (label ``scoring``): each scoring batch as one training pass for g, and two more per sample
for the Hessian-gradient product (a forward and a backward with the graph, then the backward through
the gradient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.core.evaluation import output_loss
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.method import Method

EPS = 1e-10


@dataclass(frozen=True)
class GraSPParams:
    score_batches: int = 1
    score_batch_size: int = 128     # as SNIP here (the reference uses 10 examples per class)
    temperature: float = 200.0
    bn_eval: bool = True

    def validate(self) -> None:
        if self.score_batches < 1 or self.score_batch_size < 1:
            raise ValueError("score_batches and score_batch_size must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def grasp_scores(model: nn.Module, masks: MaskSet, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                 temperature: float = 200.0, bn_eval: bool = True) -> dict[str, torch.Tensor]:
    """theta * Hg per prunable weight (g the temperature-scaled loss gradient over ``batches``),
    normalised by |sum| + 1e-10."""
    names, weights = list(masks.params), list(masks.params.values())
    was_training = model.training
    model.train(not bn_eval)
    model.zero_grad(set_to_none=True)
    g = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        grads = torch.autograd.grad(output_loss(model(x) / temperature, y), weights)
        g = [a + b for a, b in zip(g, grads, strict=True)]
    for x, y in batches:
        grads = torch.autograd.grad(output_loss(model(x) / temperature, y), weights, create_graph=True)
        sum((gi.detach() * gr).sum() for gi, gr in zip(g, grads, strict=True)).backward()
    scores = {n: (w.grad * w).detach() for n, w in zip(names, weights, strict=True)}
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    norm = abs(float(sum(s.sum() for s in scores.values()))) + EPS
    return {n: s / norm for n, s in scores.items()}


class GraSP(Method):
    """GraSP (Wang et al., ICLR 2020): prune once at init by theta * Hg, then train the sparse net."""

    name = "grasp"
    Params = GraSPParams

    def run(self, ctx: Context) -> None:
        p: GraSPParams = self.params
        batches = list(ctx.batches(p.score_batches, batch_size=p.score_batch_size, label="scoring"))
        ctx.charge_passes(2 * sum(len(y) for _, y in batches), label="scoring")  # the Hessian-gradient product
        scores = grasp_scores(ctx.model, ctx.masks, batches, temperature=p.temperature, bn_eval=p.bn_eval)
        ctx.masks.prune_to_global(scores, ctx.target_sparsity, among_active=False)
        ctx.log("pruned_sparsity", ctx.masks.sparsity())
        ctx.train(steps=ctx.remaining_steps(), desc="grasp")
