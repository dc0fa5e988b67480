"""The learning-rate schedule every method shares, and the optimizer it drives."""

from __future__ import annotations

import math

import torch
from torch import nn

from pruning_bench.core.recipe import Recipe


class LRSchedule:
    """Learning-rate factor as a function of the step, for a run of ``total_steps`` steps.

    ``cosine``: 0.5 (1 + cos(pi t / T)); ``step``: x ``gamma`` at each milestone (fractions of T);
    ``constant``. An optional linear warm-up from 0 over ``warmup_steps`` multiplies the factor.
    """

    def __init__(self, recipe: Recipe, total_steps: int, warmup_steps: int = 0) -> None:
        self.recipe = recipe
        self.total_steps = max(total_steps, 1)
        self.warmup_steps = warmup_steps

    def factor(self, step: int) -> float:
        t = min(step, self.total_steps)
        if self.recipe.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * t / self.total_steps))
        elif self.recipe.schedule == "step":
            f = self.recipe.gamma ** sum(t >= round(m * self.total_steps) for m in self.recipe.milestones)
        else:
            f = 1.0
        if self.warmup_steps and step < self.warmup_steps:
            f *= (step + 1) / self.warmup_steps
        return f

    def lr(self, step: int) -> float:
        return self.recipe.lr * self.factor(step)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay on every parameter (as OpenLTH); or, with ``optimizer = "adamw"``,
    AdamW (Loshchilov & Hutter 2019) with betas (momentum, 0.99) and decoupled weight decay (nanoGPT)."""
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.momentum, 0.99),
                                 weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay)
