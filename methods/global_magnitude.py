"""Global magnitude pruning, one-shot after dense training (Global MP) or gradual (Zhu & Gupta).

One-shot: Gupta et al., "Is Complex Better? Global Magnitude Pruning" (2022; "Global MP"), §3: one
global threshold on |w| over every conv and linear weight (first layer and classifier included),
applied to a trained dense network, then fine-tuning with the mask fixed. Reference code:
``manasgupta-1/GlobalMP`` (``prune.py``): ``kthvalue`` threshold and keep ``|w| >= threshold``; here
the top-k is exact (ties broken by position), so achieved sparsity equals the target.

Gradual: Zhu & Gupta, "To prune, or not to prune" (2017), §3: sparsity follows
s_t = s_f (1 - (1 - (t - t_0)/(t_end - t_0))^3), the mask recomputed every ``gradual_interval`` steps from
|w| among the weights still alive (pruned weights never return). The original library ranks per layer;
Gupta et al. recommend a global ranking when pruning gradually, which is what this does.

Budgets (in the budget's unit; ``pruning_bench.core.budget``):
- one-shot, ``equal``: the budget is split: ``1 - finetune_fraction`` dense training (its own full
  learning-rate schedule), then the rest fine-tuning with the schedule restarted, as GlobalMP's
  fine-tuning script does. The fine-tune continues the data stream where dense training stopped (new
  batches, never a replay of the first epochs). In the ``flops`` unit the pruned net's steps are cheaper,
  so the fine-tune gets more of them.
- one-shot, ``native``: a full dense run of the budget, then ``finetune_fraction`` of it fine-tuning.
- gradual: one run of the budget under either policy (pruning happens during training); in the ``flops``
  unit its length is priced with the schedule's estimated masks (each cheaper than the last).
"""

from __future__ import annotations

from dataclasses import dataclass

from pruning_bench.core.context import Context
from pruning_bench.core.method import Method
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.pruning.one_shot import train_prune_finetune


@dataclass(frozen=True)
class GlobalMagnitudeParams:
    schedule: str = "oneshot"        # oneshot | gradual
    finetune_fraction: float = 0.5   # one-shot: share of the budget (equal) / length (native) to fine-tune
    gradual_begin: float = 0.2       # gradual: fraction of training where pruning starts (RigL's baseline)
    gradual_end: float = 0.75        # gradual: fraction of training where the target is reached
    gradual_interval: int = 0        # gradual: steps between mask updates; 0 = 1% of training

    def validate(self) -> None:
        if self.schedule not in ("oneshot", "gradual"):
            raise ValueError(f"schedule '{self.schedule}' is not one of: oneshot, gradual")
        if not 0 < self.finetune_fraction < 1 and self.schedule == "oneshot":
            raise ValueError(f"finetune_fraction must be in (0, 1), got {self.finetune_fraction}")
        if not 0 <= self.gradual_begin < self.gradual_end <= 1:
            raise ValueError("need 0 <= gradual_begin < gradual_end <= 1")


def cubic_sparsity(step: int, target: float, begin: int, end: int) -> float:
    """Zhu & Gupta's schedule with s_i = 0: target * (1 - (1 - progress)^3), clamped to [0, target]."""
    if step < begin:
        return 0.0
    progress = min(1.0, (step - begin) / max(end - begin, 1))
    return target * (1.0 - (1.0 - progress) ** 3)


class GradualPruning(TrainCallback):
    """Re-prunes to the cubic schedule's sparsity every ``interval`` steps between ``begin`` and ``end``."""

    def __init__(self, ctx: Context, target: float, begin: int, end: int, interval: int) -> None:
        self.ctx, self.target, self.begin, self.end, self.interval = ctx, target, begin, end, interval

    def prunes_after(self, step: int) -> bool:
        t = step + 1
        return self.begin <= t <= self.end and (not (t - self.begin) % self.interval or t == self.end)

    def sparsity_at(self, step: int) -> float:
        """The sparsity the mask has while ``step`` trains (the last update at or before it)."""
        if step < self.begin:
            return 0.0
        t = self.end if step >= self.end else self.begin + (step - self.begin) // self.interval * self.interval
        return round(cubic_sparsity(t, self.target, self.begin, self.end), 2)

    def on_step_end(self, state: StepState) -> None:
        if not self.prunes_after(state.step):
            return
        t = state.step + 1
        s = cubic_sparsity(t, self.target, self.begin, self.end)
        if s > self.ctx.masks.sparsity():
            self.ctx.masks.prune_magnitude(s)
            self.ctx.log("gradual_sparsity", self.ctx.masks.sparsity(), step=t)


class GlobalMagnitude(Method):
    """Global magnitude pruning: one-shot after dense training + fine-tune, or gradual (cubic schedule)."""

    name = "global_magnitude"
    Params = GlobalMagnitudeParams

    def run(self, ctx: Context) -> None:
        p: GlobalMagnitudeParams = self.params
        if p.schedule == "gradual":
            total = ctx.affordable_steps(sparsity_at=lambda T: self._schedule(ctx, T).sparsity_at)
            ctx.train(steps=total, callbacks=[self._schedule(ctx, total)], desc="gradual")
            return

        def prune() -> None:
            ctx.log("dense_val_acc", ctx.evaluate("val").acc)
            ctx.masks.prune_magnitude(ctx.target_sparsity, among_active=False)
            ctx.log("pruned_val_acc", ctx.evaluate("val").acc)

        train_prune_finetune(ctx, prune, finetune_fraction=p.finetune_fraction)

    def _schedule(self, ctx: Context, total: int) -> GradualPruning:
        p: GlobalMagnitudeParams = self.params
        interval = p.gradual_interval or max(1, total // 100)
        return GradualPruning(ctx, ctx.target_sparsity, round(p.gradual_begin * total),
                              round(p.gradual_end * total), interval)
