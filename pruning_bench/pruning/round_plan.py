"""How IMP and SWAMP plan their rounds under a budget (the round structure: :mod:`pruning_bench.pruning.iterative`).

Price of a plan, in the budget's unit (``Context.train_cost_per_sample``): pretraining ``0 .. k`` on the
dense net, then every training run (particle) of every round, ``k .. R`` at that round's mask, plus the
forward-only passes each round declares (SWAMP's BN recalibrations). In the ``flops`` unit the masks of
later rounds are estimated by global magnitude pruning of the weights at planning time.

- ``native``: ``R`` is one full run of the trial's budget; ``k`` as asked (capped, see below).
- ``equal``: the method keeps its L rounds and particles and the rounds get shorter: the longest ``R``
  whose whole plan fits in the budget. When the rounds would be shorter than the suite's
  ``min_round_epochs`` the trial raises :class:`~pruning_bench.core.budget.DoesNotFit` (recorded with the
  smallest budget at which it fits), never falls back to another schedule. In the ``flops`` and
  ``seconds`` units, whose plans rest on estimates, the last round is re-priced at its exact mask (and
  the measured step time) before it runs, so it spends what the estimates left or saved.

In both, the rewind step is ``rewind_iters`` steps, or ``rewind_fraction * R`` when that is > 0, and
never more than half a round (``k <= R // 2``) so every round trains at least as long as it rewinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pruning_bench.core.budget import FORWARD_PASS_SHARE, TRAIN_FLOPS_PER_FORWARD, DoesNotFit
from pruning_bench.core.context import Context
from pruning_bench.core.steps import StepCounts

MAX_REWIND_SHARE = 0.5  # the rewind step never passes this fraction of a round


def round_sparsities(target: float, prune_fraction: float = 0.2) -> list[float]:
    """Sparsity after each pruning step: 1 - (1 - f)^r until the next step would reach the target; the
    last entry is the target exactly. Its length is the number of pruning rounds L (e.g. 8, 11, 14 for
    0.8, 0.9, 0.95 with f = 0.2, as in docs/methods.md §2a)."""
    if not 0 < prune_fraction < 1:
        raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    if not 0 < target < 1:
        raise ValueError(f"target sparsity must be in (0, 1), got {target}")
    out: list[float] = []
    r = 1
    while 1.0 - (1.0 - prune_fraction) ** r < target - 1e-9:
        out.append(1.0 - (1.0 - prune_fraction) ** r)
        r += 1
    out.append(target)
    return out


@dataclass(frozen=True)
class RoundPlan:
    """Round length ``round_steps`` (R, the schedule length), rewind step ``rewind_step`` (k), the mask
    sparsity each round r = 0..L trains at, the training runs (particles) of each round, and the
    forward-only samples (BN recalibration) each round spends."""

    round_steps: int
    rewind_step: int
    sparsities: tuple[float, ...]    # length L + 1; sparsities[0] = 0 (dense round)
    particles: tuple[int, ...]       # length L + 1
    forward_samples: tuple[int, ...] = ()  # length L + 1 (empty: none)

    @property
    def rounds(self) -> int:
        """Number of pruning rounds L (training rounds are L + 1)."""
        return len(self.sparsities) - 1

    def forward_at(self, r: int) -> int:
        return self.forward_samples[r] if self.forward_samples else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundPlan:
        return cls(int(d["round_steps"]), int(d["rewind_step"]), tuple(d["sparsities"]), tuple(d["particles"]),
                   tuple(d.get("forward_samples", ())))


def samples_between(ctx: Context, start: int, stop: int) -> int:
    """Sample passes the shared loop charges for global steps ``start .. stop - 1`` (the last batch of
    every epoch is the smaller remainder)."""
    return ctx.pricing.samples_between(start, stop)


def rewind_step_for(round_steps: int, rewind_iters: int, rewind_fraction: float) -> int:
    """k for a round of ``round_steps``: ``rewind_fraction * R`` if > 0 else ``rewind_iters``, capped."""
    k = round(rewind_fraction * round_steps) if rewind_fraction > 0 else rewind_iters
    return max(0, min(k, math.floor(MAX_REWIND_SHARE * round_steps)))


def plan_cost(ctx: Context, round_steps: int, rewind_step: int, particles: Sequence[int]) -> int:
    """Sample passes of the training in a plan (pretraining to k, then every particle of every round)."""
    return samples_between(ctx, 0, rewind_step) + sum(particles) * samples_between(ctx, rewind_step, round_steps)


def plan_price(ctx: Context, plan: RoundPlan) -> float:
    """What a whole plan costs in the budget's unit (module docstring)."""
    k, R = plan.rewind_step, plan.round_steps
    per_run = samples_between(ctx, k, R)
    price = samples_between(ctx, 0, k) * ctx.train_cost_per_sample(0.0)
    for r, (s, p) in enumerate(zip(plan.sparsities, plan.particles, strict=True)):
        price += p * per_run * ctx.train_cost_per_sample(s) + plan.forward_at(r) * ctx.forward_cost_per_sample(s)
    return price


def plan_epochs(counts: StepCounts, plan: RoundPlan) -> float:
    """A plan's price in the ``epochs`` unit, as dense-equivalent epochs: pretraining to k, every
    particle of every round, a third of a pass for each forward-only sample."""
    k, R = plan.rewind_step, plan.round_steps
    samples = counts.samples_between(0, k) + sum(plan.particles) * counts.samples_between(k, R)
    return (samples + FORWARD_PASS_SHARE * sum(plan.forward_at(r) for r in range(plan.rounds + 1))) / counts.n_train


def round_plan_factory(target: float, prune_fraction: float, rewind_iters: int, rewind_fraction: float,
                       particles_for: Callable[[int, float], int],
                       forward_samples_for: Callable[[int, int], int]) -> Callable[[int], RoundPlan]:
    """R -> the plan with round length R: the method's own rounds, particles and forward-only passes."""
    sparsities = (0.0, *round_sparsities(target, prune_fraction))
    particles = tuple(particles_for(r, s) for r, s in enumerate(sparsities))
    forward = tuple(forward_samples_for(r, p) for r, p in enumerate(particles))

    def plan_for(R: int) -> RoundPlan:
        return RoundPlan(R, rewind_step_for(R, rewind_iters, rewind_fraction), sparsities, particles, forward)
    return plan_for


def plan_rounds(ctx: Context, *, prune_fraction: float, rewind_iters: int, rewind_fraction: float,
                particles_for: Callable[[int, float], int] = lambda r, s: 1,
                forward_samples_for: Callable[[int, int], int] = lambda r, p: 0) -> RoundPlan:
    """The round plan for ``ctx``'s target and budget (module docstring).

    ``particles_for(r, sparsity)`` gives the training runs of round r (which trains at ``sparsity``),
    ``forward_samples_for(r, particles)`` the forward-only samples it spends besides. Under ``equal``
    raises DoesNotFit when rounds of ``ctx.min_round_epochs`` do not fit in the budget.
    """
    plan_for = round_plan_factory(ctx.target_sparsity, prune_fraction, rewind_iters, rewind_fraction,
                                  particles_for, forward_samples_for)
    if not ctx.spends_budget:
        return plan_for(ctx.budget_steps)
    shortest = shortest_round(ctx.pricing.counts, ctx.min_round_epochs, plan_for)
    available = ctx.pricing.left
    need = plan_price(ctx, shortest)
    if need > available * (1 + 1e-12):  # the meter's own tolerance: a budget priced at exactly the minimum fits
        min_epochs = ctx.pricing.epochs_once_spent(need)
        sparsities, particles = shortest.sparsities, shortest.particles
        raise DoesNotFit(
            f"{len(sparsities)} rounds ({len(sparsities) - 1} pruning steps of {prune_fraction:.0%} to "
            f"{ctx.target_sparsity:g}) x {_describe(particles)} with rounds of at least "
            f"{ctx.min_round_epochs:g} epochs need a budget of {min_epochs:.4g} epochs; this trial has "
            f"{ctx.budget_epochs:.4g}", min_budget_epochs=min_epochs)
    lo, hi = shortest.round_steps, max(shortest.round_steps, ctx.affordable_steps(available))
    while lo < hi:  # the price grows with R: the longest rounds that fit, by bisection
        mid = (lo + hi + 1) // 2
        if plan_price(ctx, plan_for(mid)) <= available * (1 + 1e-12):
            lo = mid
        else:
            hi = mid - 1
    return plan_for(lo)


def _describe(particles: Sequence[int]) -> str:
    kinds = sorted(set(particles))
    return f"{kinds[0]} training run(s) each" if len(kinds) == 1 else f"{sum(particles)} training runs"


def shortest_round(counts: StepCounts, min_round_epochs: float, plan_for: Callable[[int], RoundPlan]) -> RoundPlan:
    """The plan with the shortest rounds (steps ``k .. R``) that still train ``min_round_epochs``."""
    need = math.ceil(min_round_epochs * counts.n_train - 1e-9)

    def long_enough(R: int) -> bool:
        plan = plan_for(R)
        return counts.samples_between(plan.rewind_step, R) >= need

    hi = 1
    while not long_enough(hi):
        hi *= 2
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if long_enough(mid):
            hi = mid
        else:
            lo = mid + 1
    return plan_for(lo)


def final_round_steps(ctx: Context, plan: RoundPlan) -> int:
    """The last round's R. Under ``equal`` in the ``flops`` and ``seconds`` units the plan rests on
    estimates (future masks, step times): the last round is re-priced at its exact mask and the step time
    measured so far, so it spends what is left. Elsewhere the plan is exact and R stays."""
    if not ctx.pricing.plans_are_estimates:
        return plan.round_steps
    r, k = plan.rounds, plan.rewind_step
    if (per_sample := ctx.pricing.measured_per_sample()) is not None:  # measured, all overheads included
        forward = plan.forward_at(r) * per_sample / TRAIN_FLOPS_PER_FORWARD  # a forward pass of a step
    else:
        per_sample = ctx.train_cost_per_sample()
        forward = plan.forward_at(r) * ctx.forward_cost_per_sample()
    affordable = math.floor(max(0.0, ctx.pricing.left - forward) / (per_sample * plan.particles[r]) + 1e-9)
    steps = ctx.pricing.counts.steps_for_samples(affordable, k)
    return k + max(1, steps)
