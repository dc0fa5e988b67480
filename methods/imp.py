"""IMP: iterative magnitude pruning with weight rewinding (lottery tickets).

Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019, §2 and §4 (iterative global pruning);
Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML
2020, §4 (rewinding to iteration k instead of 0). Reference code: ``facebookresearch/open_lth``
(``lottery/runner.py``, ``pruning/sparse_global.py``, ``training/train.py``), which this follows.

Algorithm (shared round machinery in :mod:`pruning_bench.pruning.iterative`):
1. Train the dense network from step 0 to the rewind step k (OpenLTH's "pretraining", same recipe),
   keep theta_k.
2. Round r = 0..L: rewind the weights to theta_k (pruned weights zero), fresh optimizer (momentum
   reset), train steps k .. R with the learning-rate schedule of an R-step run continued from step k
   (not restarted). Every round sees the same data order (the trial's data seed), as OpenLTH's fixed
   ``data_order_seed`` gives.
3. After round r < L: prune globally by |w| among the still unpruned weights only, to sparsity
   1 - (1 - prune_fraction)^(r+1); the last pruning goes exactly to the target (fewer than 20% of the
   remaining weights), so achieved sparsity equals the target. Conv and linear weights are all
   prunable (OpenLTH ResNet-20 default); biases and BN stay dense.
4. The output is the model trained in round L. Per round: ``round_sparsity``, ``round_val_acc``,
   ``round_test_acc`` (step = round); a checkpoint after every round lets an interrupted trial resume.

Where this differs from OpenLTH: each pruning step keeps exactly round((1-f)^r * N) weights (OpenLTH
removes ceil(f * remaining) plus ties, docs/methods.md pitfall 9), so per-round sparsities follow 1 - 0.8^r exactly.

Budgets: ``native`` makes every round a full run of the trial's budget (cost k + (L+1)(R-k) steps,
about (L+1)x); ``equal`` keeps L and the 20% steps and shortens the round length R so that
k + (L+1)(R-k) fits in the budget; when that would make rounds shorter than the suite's
``min_round_epochs`` the trial is recorded as ``does_not_fit`` with the budget it needs (rule in
:mod:`pruning_bench.pruning.iterative`). A schedule adapted on purpose is a parameter, e.g.
``imp[prune_fraction=0.5]``: its own row in the report. ``rewind_iters`` (default 500, OpenLTH's
ResNet-20 at batch 128) or ``rewind_fraction`` of a round; k never exceeds half a round.
"""

from __future__ import annotations

from dataclasses import dataclass

from pruning_bench.core.context import Context
from pruning_bench.core.method import Method
from pruning_bench.core.steps import PlanSetting
from pruning_bench.pruning.iterative import RoundParams, finish_round, rewind, round_steps, start_or_resume


@dataclass(frozen=True)
class IMPParams(RoundParams):
    """prune_fraction, rewind_iters, rewind_fraction (iterative.py)."""


class IMP(Method):
    """Iterative magnitude pruning with rewinding to iteration k (OpenLTH lottery runner)."""

    name = "imp"
    Params = IMPParams

    def min_budget_epochs(self, setting: PlanSetting) -> float:
        """Pretraining to k plus L + 1 rounds of at least ``min_round_epochs`` (iterative.py)."""
        return self.params.min_budget_epochs(setting)

    def run(self, ctx: Context) -> None:
        p: IMPParams = self.params
        plan, theta_k, first = start_or_resume(ctx, lambda: p.plan(ctx))
        k = plan.rewind_step
        for r in range(first, plan.rounds + 1):
            rewind(ctx, theta_k)
            R = round_steps(ctx, plan, r)
            ctx.train(steps=R - k, start_step=k, schedule_steps=R, label="train",
                      desc=f"imp round {r}/{plan.rounds}")
            finish_round(ctx, plan, theta_k, r)
