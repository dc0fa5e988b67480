"""RigL: dynamic sparse training that drops by magnitude and grows by gradient.

Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets Winners", ICML 2020,
§3 (Algorithm 1), §4 (defaults) and App. H (training FLOPs). Reference code ``google-research/rigl``
(``rigl/sparse_optimizers_base.py::SparseRigLOptimizerBase``, ``rigl/sparse_utils.py``).

Algorithm:
1. Per-layer densities (``pruning_bench.pruning.layer_densities``): ERK (default; dense-layer capping loop) or
   uniform (first layer dense). Biases and BN stay dense.
2. Random initial mask per layer with exactly the layer's number of kept weights (``ctx.generator``).
3. Train for the budget with the suite's recipe. On step t with t % delta_t == 0 and t < t_end
   (t_end = ``end_fraction`` x training steps), instead of the SGD update, per layer:
   - n_drop = floor(n_active * f(t)), f(t) = alpha/2 (1 + cos(pi t / t_end));
   - drop the n_drop active weights with the smallest |w| (+ N(0, 1e-5) noise to break ties, as the
     reference), grow the n_drop connections with the largest |dense gradient| of the current batch among
     those not kept (just-dropped ones included: if re-grown they keep their value, ``reinit_when_same=False``);
   - newly grown weights start at 0 and their momentum buffer is set to 0.
   Per-layer non-zero counts never change.
4. Training FLOPs (App. H): a step costs 3 f_S per sample; an update step 2 f_S + f_D (the weight
   gradient is dense). The updater declares its update steps (``dense_gradient``) and the shared loop
   charges them; the run's length T is the most steps the budget pays for at those prices, so in the
   ``flops`` unit RigL trains more steps than dense for the same FLOPs (RigL §4, its "1x" runs).

Where paper and reference code differ (reference followed):
- Steps are counted from 0 and the first update happens at step 0 (the reference's ``last_update_step``
  starts at -delta_t); the paper's Algorithm 1 counts from 1. Updates stop strictly before t_end (paper).
- Drop scores carry N(0, 1e-5) tie-breaking noise; drop is ranked among active weights only.
Harness choices: uniform re-solves the non-first layers' density so the total equals the target
(``match_total``; the reference leaves the total below it). ``delta_t`` = 100 is the paper's default;
on tiny suites (a few hundred steps) few updates happen, so it is a parameter. Under both budget policies
RigL trains once for the trial's budget (its 1x schedule at the 1x level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pruning_bench.core.context import Context
from pruning_bench.core.masks import random_masks
from pruning_bench.core.method import Method
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.pruning.layer_densities import keep_counts, layer_densities

DROP_NOISE_STD = 1e-5  # reference: generic_mask_update(noise_std=1e-5)


@dataclass(frozen=True)
class RigLParams:
    distribution: str = "erk"     # erk | uniform (first layer dense)
    delta_t: int = 100            # steps between mask updates
    alpha: float = 0.3            # initial drop fraction
    end_fraction: float = 0.75    # t_end as a fraction of training steps
    match_total: bool = True      # uniform: lower the other layers' density so the total hits the target

    def validate(self) -> None:
        if self.distribution not in ("erk", "uniform"):
            raise ValueError(f"distribution '{self.distribution}' is not one of: erk, uniform")
        if self.delta_t < 1:
            raise ValueError(f"delta_t must be >= 1, got {self.delta_t}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0 < self.end_fraction <= 1:
            raise ValueError(f"end_fraction must be in (0, 1], got {self.end_fraction}")


def drop_fraction(step: int, alpha: float, t_end: int) -> float:
    """Cosine-annealed drop fraction f(t) = alpha/2 (1 + cos(pi t / t_end))."""
    return alpha / 2 * (1 + math.cos(math.pi * min(step, t_end) / t_end))


@torch.no_grad()
def drop_and_grow(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, fraction: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's RigL update: (new mask, newly grown connections). The active count is unchanged."""
    n_active = int(mask.sum())
    n_drop = math.floor(n_active * fraction)
    if n_drop == 0 or n_active == mask.numel():  # a dense layer re-grows exactly what it drops
        return mask.clone(), torch.zeros_like(mask)
    noise = torch.randn(weight.shape, generator=generator).to(weight.device) * DROP_NOISE_STD
    drop_score = (weight.abs() + noise).masked_fill(~mask, float("-inf")).flatten()
    kept = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    kept[torch.topk(drop_score, n_active - n_drop, sorted=False).indices] = True
    grow_score = grad.abs().float().flatten().masked_fill(kept, float("-inf"))
    grown = torch.zeros_like(kept)
    grown[torch.topk(grow_score, n_drop, sorted=False).indices] = True
    new_mask = (kept | grown).view_as(mask)
    return new_mask, (grown.view_as(mask) & ~mask)


class RigLUpdater(TrainCallback):
    """Replaces the SGD step by a drop/grow mask update every ``delta_t`` steps before ``t_end``."""

    def __init__(self, ctx: Context, delta_t: int, alpha: float, t_end: int) -> None:
        self.ctx, self.delta_t, self.alpha, self.t_end = ctx, delta_t, alpha, t_end
        self.updates: list[tuple[int, float, float]] = []  # (step, drop fraction, fraction of actives moved)

    def is_update_step(self, step: int) -> bool:
        return step % self.delta_t == 0 and step < self.t_end

    def dense_gradient(self, step: int) -> bool:
        return self.is_update_step(step)

    def after_backward(self, state: StepState) -> None:
        if not self.is_update_step(state.step):
            return
        ctx, f = self.ctx, drop_fraction(state.step, self.alpha, self.t_end)
        new_masks, moved, active = {}, 0, 0
        for name, weight in ctx.masks.params.items():
            mask = ctx.masks.masks[name]
            grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            new_mask, grown = drop_and_grow(weight.detach(), grad, mask, f, ctx.generator)
            self._reset_new(weight, grown, state.optimizer)
            new_masks[name] = new_mask
            moved += int(grown.sum())
            active += int(mask.sum())
        ctx.masks.update(new_masks)
        self.updates.append((state.step, f, moved / max(active, 1)))
        ctx.log("rigl_moved_fraction", moved / max(active, 1), step=state.step)

    @staticmethod
    @torch.no_grad()
    def _reset_new(weight: torch.Tensor, grown: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        weight[grown] = 0.0
        buf = optimizer.state.get(weight, {}).get("momentum_buffer")
        if buf is not None:
            buf[grown] = 0.0

    def skip_optimizer_step(self, state: StepState) -> bool:
        return self.is_update_step(state.step)


class RigL(Method):
    """RigL (Evci et al., ICML 2020): sparse from the start, periodic magnitude-drop / gradient-grow."""

    name = "rigl"
    Params = RigLParams

    def run(self, ctx: Context) -> None:
        p: RigLParams = self.params
        init_rigl_masks(ctx, p)

        def updater(steps: int) -> RigLUpdater:
            return RigLUpdater(ctx, p.delta_t, p.alpha, max(1, round(p.end_fraction * steps)))

        steps = ctx.remaining_steps(callbacks_for=lambda T: [updater(T)])
        rigl = updater(steps)
        ctx.train(steps=steps, callbacks=[rigl], desc="rigl")
        ctx.log("rigl_steps", steps)
        ctx.log("rigl_updates", len(rigl.updates))


def init_rigl_masks(ctx: Context, p: RigLParams) -> None:
    """Per-layer densities (ERK / uniform) and a random mask with exactly those counts."""
    shapes = {n: tuple(w.shape) for n, w in ctx.masks.params.items()}
    dense = [next(iter(shapes))] if p.distribution == "uniform" else []
    densities = layer_densities(p.distribution, shapes, ctx.target_sparsity, dense=dense,
                                match_total=p.match_total)
    total_keep = round((1 - ctx.target_sparsity) * sum(math.prod(s) for s in shapes.values()))
    exact = p.distribution == "erk" or p.match_total
    counts = keep_counts(shapes, densities, total_keep if exact else None)
    ctx.masks.update(random_masks(ctx.masks, counts, ctx.generator))
