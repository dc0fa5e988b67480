"""IMP: iterative magnitude pruning with weight rewinding (lottery tickets).

Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019, §2 and §4 (iterative global pruning);
Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML
2020, §4 (rewinding to iteration k instead of 0). Reference code: ``facebookresearch/open_lth``
(``lottery/runner.py``, ``pruning/sparse_global.py``, ``training/train.py``), which this follows.

Algorithm (shared round machinery in :mod:`pruning_bench.iterative`):
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
removes ceil(f * remaining) plus ties, pitfall 9), so per-round sparsities follow 1 - 0.8^r exactly.

Budgets: ``native`` makes every round a full run of the suite's length (cost k + (L+1)(R-k) steps,
about (L+1)x); ``equal`` keeps L and shortens the round length R so that k + (L+1)(R-k) fits in the
suite's budget (rule in :mod:`pruning_bench.iterative`). ``rewind_iters`` (default 500, OpenLTH's
ResNet-20 at batch 128) or ``rewind_fraction`` of a round; k never exceeds half a round.
"""

from __future__ import annotations

from dataclasses import dataclass

from pruning_bench.context import Context
from pruning_bench.iterative import finish_round, plan_rounds, rewind, start_or_resume
from pruning_bench.method import Method


@dataclass(frozen=True)
class IMPParams:
    prune_fraction: float = 0.2     # share of the remaining weights pruned per round (OpenLTH)
    rewind_iters: int = 500         # rewind step k in iterations (LMC: 500 for ResNet-20 at batch 128)
    rewind_fraction: float = 0.0    # if > 0: k = rewind_fraction * round length, overriding rewind_iters
    min_round_steps: int = 1        # equal: shortest round (steps k..R) before rounds are dropped
    min_round_fraction: float = 0.25  # equal: shortest round as a share of the budget (iterative.py)

    def validate(self) -> None:
        if not 0 <= self.min_round_fraction < 1:
            raise ValueError(f"min_round_fraction must be in [0, 1), got {self.min_round_fraction}")
        if not 0 < self.prune_fraction < 1:
            raise ValueError(f"prune_fraction must be in (0, 1), got {self.prune_fraction}")
        if self.rewind_iters < 0:
            raise ValueError(f"rewind_iters must be >= 0, got {self.rewind_iters}")
        if not 0 <= self.rewind_fraction <= 0.5:
            raise ValueError(f"rewind_fraction must be in [0, 0.5], got {self.rewind_fraction}")
        if self.min_round_steps < 1:
            raise ValueError(f"min_round_steps must be >= 1, got {self.min_round_steps}")


class IMP(Method):
    """Iterative magnitude pruning with rewinding to iteration k (OpenLTH lottery runner)."""

    name = "imp"
    Params = IMPParams

    def run(self, ctx: Context) -> None:
        p: IMPParams = self.params
        plan, theta_k, first = start_or_resume(ctx, lambda: plan_rounds(
            ctx, prune_fraction=p.prune_fraction, rewind_iters=p.rewind_iters,
            rewind_fraction=p.rewind_fraction, min_round_steps=p.min_round_steps,
            min_round_fraction=p.min_round_fraction))
        k, R = plan.rewind_step, plan.round_steps
        for r in range(first, plan.rounds + 1):
            rewind(ctx, theta_k)
            ctx.train(steps=R - k, start_step=k, schedule_steps=R, label="train",
                      desc=f"imp round {r}/{plan.rounds}")
            finish_round(ctx, plan, theta_k, r)
