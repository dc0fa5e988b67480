"""The dense baseline: the suite's recipe for the whole budget, no pruning.

Every leaderboard needs this row: it is the accuracy that "matching" is measured against
(Frankle et al. 2020, §2), trained with exactly the loop, schedule and budget the pruning methods get.
"""

from __future__ import annotations

from pruning_bench.core.context import Context
from pruning_bench.core.method import Method


class Dense(Method):
    """Dense baseline: train the unpruned model for the suite's budget (one trial per seed)."""

    name = "dense"
    prunes = False

    def run(self, ctx: Context) -> None:
        ctx.train(steps=ctx.remaining_steps(), desc="dense")  # the whole budget, in any unit
