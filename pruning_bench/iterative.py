"""What IMP and SWAMP share: the per-round sparsity plan, round planning under both budget policies,
rewinding, and per-round checkpoint state.

Round structure (OpenLTH ``lottery/runner.py`` with rewinding, Frankle et al. 2020): pretrain the dense
network from step 0 to the rewind step ``k`` once and keep theta_k; then every round r = 0..L starts from
theta_k (masked by the current mask) with a fresh optimizer and trains steps ``k .. R`` of an
``R``-step learning-rate schedule, so the schedule continues from step ``k`` instead of restarting.
Round 0 is dense; after round r < L the weights are pruned to ``round_sparsities[r]``; round L trains
at the target sparsity and is the output.

Cost of a plan in sample passes: ``samples(0, k) + sum_r P_r * samples(k, R)`` with ``P_r`` the
number of training runs (particles) of round r (1 for IMP).

- ``native``: ``R`` is one full run of the suite's budget; ``k`` as asked (capped, see below).
- ``equal``: the largest ``R`` whose whole plan (pretraining, all rounds, all particles) fits in what is
  left of the suite's budget, counted in samples exactly as the meter charges them. Rounds get shorter,
  but no shorter than ``min_round_fraction`` of the budget (default 1/4) or ``min_round_steps``: when
  the 20%-of-remaining rounds do not fit at that length there are fewer rounds, each pruning the same
  larger share 1 - (1 - target)^(1/L) of the remaining weights (logged as ``plan_rounds``); when not even
  one round fits at that length, one round as long as fits. The floor exists because measured rounds
  that are too short ruin both methods: on mnist1d (40 epochs, 3 seeds, target 0.8) IMP reached
  73.5% with 20% steps in 1.5-epoch rounds, 79.0% with rounds of at least 5 epochs and 88.4% with rounds
  of at least 10; SWAMP (4 particles) 47.4%, 79.2% and (one round) its best.

In both, the rewind step is ``rewind_iters`` steps, or ``rewind_fraction * R`` when that is > 0, and
never more than half a round (``k <= R // 2``) so every round trains at least as long as it rewinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pruning_bench.context import Context
from pruning_bench.errors import BenchError

MAX_REWIND_SHARE = 0.5  # the rewind step never passes this fraction of a round


@dataclass(frozen=True)
class RoundParams:
    """The round-planning parameters IMP and SWAMP share (their Params extend this)."""

    prune_fraction: float = 0.2     # share of the remaining weights pruned per round (OpenLTH)
    rewind_iters: int = 500         # rewind step k in iterations (LMC: 500 for ResNet-20 at batch 128)
    rewind_fraction: float = 0.0    # if > 0: k = rewind_fraction * round length, overriding rewind_iters
    min_round_steps: int = 1        # equal: shortest round (steps k..R) before rounds are dropped
    min_round_fraction: float = 0.25  # equal: shortest round as a share of the budget

    def validate(self) -> None:
        if not 0 < self.prune_fraction < 1:
            raise ValueError(f"prune_fraction must be in (0, 1), got {self.prune_fraction}")
        if self.rewind_iters < 0:
            raise ValueError(f"rewind_iters must be >= 0, got {self.rewind_iters}")
        if not 0 <= self.rewind_fraction <= 0.5:
            raise ValueError(f"rewind_fraction must be in [0, 0.5], got {self.rewind_fraction}")
        if self.min_round_steps < 1:
            raise ValueError(f"min_round_steps must be >= 1, got {self.min_round_steps}")
        if not 0 <= self.min_round_fraction < 1:
            raise ValueError(f"min_round_fraction must be in [0, 1), got {self.min_round_fraction}")

    def plan(self, ctx: Context, particles_for: Callable[[int, float], int] = lambda r, s: 1) -> RoundPlan:
        return plan_rounds(ctx, prune_fraction=self.prune_fraction, rewind_iters=self.rewind_iters,
                           rewind_fraction=self.rewind_fraction, particles_for=particles_for,
                           min_round_steps=self.min_round_steps, min_round_fraction=self.min_round_fraction)


def round_sparsities(target: float, prune_fraction: float = 0.2) -> list[float]:
    """Sparsity after each pruning step: 1 - (1 - f)^r until the next step would reach the target; the
    last entry is the target exactly. Its length is the number of pruning rounds L (e.g. 8, 11, 14 for
    0.8, 0.9, 0.95 with f = 0.2, as in methods.md 2a)."""
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
    sparsity each round r = 0..L trains at, and the training runs (particles) of each round."""

    round_steps: int
    rewind_step: int
    sparsities: tuple[float, ...]    # length L + 1; sparsities[0] = 0 (dense round)
    particles: tuple[int, ...]       # length L + 1

    @property
    def rounds(self) -> int:
        """Number of pruning rounds L (training rounds are L + 1)."""
        return len(self.sparsities) - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoundPlan:
        return cls(int(d["round_steps"]), int(d["rewind_step"]), tuple(d["sparsities"]), tuple(d["particles"]))


def samples_between(ctx: Context, start: int, stop: int) -> int:
    """Sample passes the shared loop charges for global steps ``start .. stop - 1`` (the last batch of
    every epoch is the smaller remainder)."""
    return ctx.trainer.samples_between(start, stop)


def rewind_step_for(round_steps: int, rewind_iters: int, rewind_fraction: float) -> int:
    """k for a round of ``round_steps``: ``rewind_fraction * R`` if > 0 else ``rewind_iters``, capped."""
    k = round(rewind_fraction * round_steps) if rewind_fraction > 0 else rewind_iters
    return max(0, min(k, math.floor(MAX_REWIND_SHARE * round_steps)))


def plan_cost(ctx: Context, round_steps: int, rewind_step: int, particles: Sequence[int]) -> int:
    """Sample passes of a whole plan (pretraining to k, then every particle of every round)."""
    return samples_between(ctx, 0, rewind_step) + sum(particles) * samples_between(ctx, rewind_step, round_steps)


def plan_rounds(ctx: Context, *, prune_fraction: float, rewind_iters: int, rewind_fraction: float,
                particles_for: Callable[[int, float], int] = lambda r, s: 1,
                min_round_steps: int = 1, min_round_fraction: float = 0.0) -> RoundPlan:
    """The round plan for ``ctx``'s target and budget policy (module docstring).

    ``particles_for(r, sparsity)`` gives the training runs of round r (which trains at ``sparsity``).
    Under ``equal``, when not even rounds of ``min_round_steps`` training steps fit, the number of
    rounds L is reduced one at a time, each pruning step then removing the same larger fraction
    1 - (1 - target)^(1/L) of the remaining weights; BenchError when one round does not fit either.
    """
    steps = round_sparsities(ctx.target_sparsity, prune_fraction)
    if ctx.budget.policy != "equal":
        R = ctx.budget_steps
        return _plan(R, rewind_step_for(R, rewind_iters, rewind_fraction), steps, particles_for)
    min_round_steps = max(min_round_steps, round(min_round_fraction * ctx.budget_steps))
    for n_rounds in range(len(steps), 0, -1):
        if n_rounds < len(steps):
            steps = round_sparsities(ctx.target_sparsity, 1.0 - (1.0 - ctx.target_sparsity) ** (1.0 / n_rounds))
            steps = steps[:n_rounds - 1] + [ctx.target_sparsity]
        plan = _fit_equal(ctx, steps, particles_for, rewind_iters, rewind_fraction, min_round_steps)
        if plan is not None:
            return plan
    plan = _fit_equal(ctx, [ctx.target_sparsity], particles_for, rewind_iters, rewind_fraction, 1)
    if plan is not None:  # one round, as long as the budget allows
        return plan
    raise BenchError(f"the 'equal' budget ({ctx.budget_epochs:g} epochs) is too small for even one pruning "
                     f"round at sparsity {ctx.target_sparsity:g}; raise the budget or use --budget-policy native")


def _plan(R: int, k: int, steps: Sequence[float], particles_for: Callable[[int, float], int]) -> RoundPlan:
    sparsities = (0.0, *steps)
    return RoundPlan(R, k, sparsities, tuple(particles_for(r, s) for r, s in enumerate(sparsities)))


def _fit_equal(ctx: Context, steps: Sequence[float], particles_for: Callable[[int, float], int],
               rewind_iters: int, rewind_fraction: float, min_round_steps: int) -> RoundPlan | None:
    """The plan with the longest rounds whose whole cost fits in the rest of the budget, or None."""
    available = ctx.budget.remaining_samples
    particles = _plan(0, 0, steps, particles_for).particles

    def fits(R: int) -> bool:
        k = rewind_step_for(R, rewind_iters, rewind_fraction)
        return R - k >= min_round_steps and plan_cost(ctx, R, k, particles) <= available

    hi = ctx.remaining_steps()
    # k <= R // 2, so R = 2 * min_round_steps + 1 is long enough: if it does not fit, no longer R does
    lo = next((R for R in range(1, min(hi, 2 * min_round_steps + 1) + 1) if fits(R)), None)
    if lo is None:
        return None
    while lo < hi:  # cost grows with R: the largest R that fits, by bisection
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return _plan(lo, rewind_step_for(lo, rewind_iters, rewind_fraction), steps, particles_for)


def log_plan(ctx: Context, plan: RoundPlan) -> None:
    """Record the plan in the trial's run (round length, rewind step, rounds, planned sample passes)."""
    ctx.log("plan_round_steps", plan.round_steps)
    ctx.log("plan_rewind_step", plan.rewind_step)
    ctx.log("plan_rounds", plan.rounds)
    ctx.log("plan_epochs", plan_cost(ctx, plan.round_steps, plan.rewind_step, plan.particles) / ctx.data.n_train)


def log_round(ctx: Context, r: int) -> None:
    """Per-round metrics of the model in ``ctx.model`` (step = round)."""
    ctx.log("round_sparsity", ctx.masks.sparsity(), step=r)
    ctx.log("round_val_acc", ctx.evaluate("val").acc, step=r)
    ctx.log("round_test_acc", ctx.evaluate("test").acc, step=r)
    ctx.log("round_epochs_charged", ctx.budget.epochs_charged, step=r)


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


def finish_round(ctx: Context, plan: RoundPlan, theta_k: dict[str, Any], r: int) -> None:
    """Log round r, prune to the next round's sparsity (if any) and checkpoint for resuming."""
    log_round(ctx, r)
    if r < plan.rounds:
        ctx.masks.prune_magnitude(plan.sparsities[r + 1], among_active=True)  # unpruned weights only
    ctx.save_checkpoint({"plan": plan.to_dict(), "theta_k": theta_k, "next_round": r + 1})


def rewind(ctx: Context, theta_k: dict[str, Any]) -> None:
    """Weights (and buffers) back to theta_k; the current masks are kept and applied."""
    ctx.restore(theta_k, masks=False)
