"""What IMP and SWAMP share: their round parameters, rewinding, per-round logging and checkpoint state.

Round structure (OpenLTH ``lottery/runner.py`` with rewinding, Frankle et al. 2020): pretrain the dense
network from step 0 to the rewind step ``k`` once and keep theta_k; then every round r = 0..L starts from
theta_k (masked by the current mask) with a fresh optimizer and trains steps ``k .. R`` of an
``R``-step learning-rate schedule, so the schedule continues from step ``k`` instead of restarting.
Round 0 is dense; after round r < L the weights are pruned to ``round_sparsities[r]``; round L trains
at the target sparsity and is the output. L is the method's own: 20% of the remaining weights per
round (OpenLTH) until the target, e.g. 8, 11 and 14 pruning rounds for 80, 90 and 95%.

Round planning under both policies, and what a plan costs, is in :mod:`pruning_bench.pruning.round_plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pruning_bench.core.context import Context
from pruning_bench.core.steps import PlanSetting
from pruning_bench.pruning.round_plan import (
    RoundPlan,
    final_round_steps,
    plan_cost,
    plan_epochs,
    plan_price,
    plan_rounds,
    round_plan_factory,
    samples_between,
    shortest_round,
)


@dataclass(frozen=True)
class RoundParams:
    """The round-planning parameters IMP and SWAMP share (their Params extend this)."""

    prune_fraction: float = 0.2     # share of the remaining weights pruned per round (OpenLTH)
    rewind_iters: int = 500         # rewind step k in iterations (LMC: 500 for ResNet-20 at batch 128)
    rewind_fraction: float = 0.0    # if > 0: k = rewind_fraction * round length, overriding rewind_iters

    def validate(self) -> None:
        if not 0 < self.prune_fraction < 1:
            raise ValueError(f"prune_fraction must be in (0, 1), got {self.prune_fraction}")
        if self.rewind_iters < 0:
            raise ValueError(f"rewind_iters must be >= 0, got {self.rewind_iters}")
        if not 0 <= self.rewind_fraction <= 0.5:
            raise ValueError(f"rewind_fraction must be in [0, 0.5], got {self.rewind_fraction}")

    def plan(self, ctx: Context, particles_for: Callable[[int, float], int] = lambda r, s: 1,
             forward_samples_for: Callable[[int, int], int] = lambda r, p: 0) -> RoundPlan:
        return plan_rounds(ctx, prune_fraction=self.prune_fraction, rewind_iters=self.rewind_iters,
                           rewind_fraction=self.rewind_fraction, particles_for=particles_for,
                           forward_samples_for=forward_samples_for)

    def min_budget_epochs(self, setting: PlanSetting,
                          particles_for: Callable[[int, float], int] = lambda r, s: 1,
                          forward_samples_for: Callable[[int, int], int] = lambda r, p: 0) -> float:
        """The smallest budget, in dense-equivalent epochs, at which the rounds fit: the plan with the
        shortest rounds allowed (``setting.min_round_epochs``), priced as the loop charges it in the
        ``epochs`` unit. Computed before anything trains; it equals the ``min_budget_epochs`` of the
        :class:`~pruning_bench.core.budget.DoesNotFit` that a smaller budget raises (a test checks it). In the
        ``flops`` unit it is an upper bound (later rounds are sparse and cost less)."""
        plan_for = round_plan_factory(setting.target_sparsity, self.prune_fraction, self.rewind_iters,
                                      self.rewind_fraction, particles_for, forward_samples_for)
        plan = shortest_round(setting.counts, setting.min_round_epochs, plan_for)
        return plan_epochs(setting.counts, plan)


def log_plan(ctx: Context, plan: RoundPlan) -> None:
    """Record the plan in the trial's run: round length (steps and epochs), rewind step, rounds,
    particles, and its price as dense-equivalent epochs."""
    ctx.log("plan_round_steps", plan.round_steps)
    ctx.log("plan_round_epochs", samples_between(ctx, plan.rewind_step, plan.round_steps) / ctx.data.n_train)
    ctx.log("plan_rewind_step", plan.rewind_step)
    ctx.log("plan_rounds", plan.rounds)
    ctx.log("plan_particles", max(plan.particles))
    ctx.log("plan_dense_particles", plan.particles[0])
    ctx.log("plan_epochs", ctx.pricing.in_epochs(plan_price(ctx, plan)) if ctx.pricing.epoch_cost_known
            else plan_cost(ctx, plan.round_steps, plan.rewind_step, plan.particles) / ctx.data.n_train)


def log_round(ctx: Context, r: int) -> None:
    """Per-round metrics of the model in ``ctx.model`` (step = round)."""
    ctx.log("round_sparsity", ctx.masks.sparsity(), step=r)
    ctx.log("round_val_acc", ctx.evaluate("val").acc, step=r)
    ctx.log("round_test_acc", ctx.evaluate("test").acc, step=r)
    ctx.log("round_epochs_charged", ctx.pricing.epochs_charged, step=r)


def start_or_resume(ctx: Context, make_plan: Callable[[], RoundPlan]) -> tuple[RoundPlan, dict[str, Any], int]:
    """Resume from the last finished round's checkpoint, or plan, pretrain to k and snapshot theta_k.

    Returns (plan, theta_k snapshot, first round to run).
    """
    state = ctx.load_checkpoint()
    if state is not None:
        return RoundPlan.from_dict(state["plan"]), state["theta_k"], int(state["next_round"])
    plan = make_plan()
    log_plan(ctx, plan)
    if plan.rewind_step > 0:
        ctx.train(steps=plan.rewind_step, start_step=0, schedule_steps=plan.round_steps,
                  label="pretrain", desc="pretrain to k")
    return plan, ctx.snapshot(), 0


def round_steps(ctx: Context, plan: RoundPlan, r: int) -> int:
    """R for round r: the plan's, except a re-priced last round (:func:`final_round_steps`)."""
    if r < plan.rounds:
        return plan.round_steps
    last = final_round_steps(ctx, plan)
    if last != plan.round_steps:
        ctx.log("final_round_steps", last)
    return last


def finish_round(ctx: Context, plan: RoundPlan, theta_k: dict[str, Any], r: int) -> None:
    """Log round r, prune to the next round's sparsity (if any) and checkpoint for resuming."""
    log_round(ctx, r)
    if r < plan.rounds:
        ctx.masks.prune_magnitude(plan.sparsities[r + 1], among_active=True)  # unpruned weights only
    ctx.save_checkpoint({"plan": plan.to_dict(), "theta_k": theta_k, "next_round": r + 1})


def rewind(ctx: Context, theta_k: dict[str, Any]) -> None:
    """Weights (and buffers) back to theta_k; the current masks are kept and applied."""
    ctx.restore(theta_k, masks=False)
