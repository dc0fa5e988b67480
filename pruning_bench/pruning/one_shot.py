"""One-shot pruning as two phases of one budget: train, prune once, fine-tune.

Global magnitude (one-shot), N:M (one-shot) and network slimming share this shape; only what happens
between the phases differs, so each passes its pruning step as ``prune``. How the phases split the
budget depends on the policy, and is decided here, once, so a method never reads the budget:

- ``equal``: the first phase takes ``1 - finetune_fraction`` of the budget; fine-tuning gets whatever is
  left, priced at the pruned model (in the ``flops`` unit a sparse or shrunk model's steps are cheaper, so
  it gets more of them).
- ``native``: the first phase is a whole run of the budget (the paper trains to convergence first);
  fine-tuning is ``native_finetune`` (default ``finetune_fraction``) of it.

Fine-tuning restarts the learning-rate schedule and continues the data stream (new batches, not a replay
of the first phase's), and the final step is what is measured (never the best one).

Post-training methods (SparseGPT, Wanda, magnitude) pass ``finetune_fraction=0``: no fine-tuning phase at
all. Their pruning step makes forward-only passes over calibration data (``prune_forward_samples`` sample
passes, charged by ``prune`` itself as it draws them). Under ``equal`` the first phase leaves room for
them, priced at the dense model (an upper bound: later passes run a partly pruned model), so the pruning
step never overspends and, without fine-tuning, the first phase gets everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pruning_bench.core.context import Context
from pruning_bench.core.training import TrainCallback


def train_prune_finetune(ctx: Context, prune: Callable[[], None], *, finetune_fraction: float,
                         native_finetune: float | None = None, callbacks: Sequence[TrainCallback] = (),
                         names: tuple[str, str] = ("dense", "finetune"), prune_forward_samples: float = 0) -> None:
    """Train (with ``callbacks``), call ``prune()``, then fine-tune, splitting the budget as above;
    ``names`` label the two phases in progress output. ``finetune_fraction=0`` skips fine-tuning;
    ``prune_forward_samples`` forward-only sample passes of ``prune()`` are reserved under ``equal``."""
    if not 0.0 <= finetune_fraction < 1.0:
        raise ValueError(f"finetune_fraction must be in (0, 1), got {finetune_fraction} (or 0: no fine-tuning)")
    equal = ctx.spends_budget
    first = ctx.steps_for_fraction(1.0 - finetune_fraction if equal else 1.0)
    if equal and prune_forward_samples > 0:
        reserve = prune_forward_samples * ctx.forward_cost_per_sample()
        first = min(first, ctx.affordable_steps(ctx.pricing.left - reserve))
    ctx.train(steps=first, callbacks=callbacks, desc=names[0])
    prune()
    if finetune_fraction == 0:
        return
    if equal:
        rest = ctx.remaining_steps(start_step=first)
    else:
        share = finetune_fraction if native_finetune is None else native_finetune
        rest = ctx.steps_for_fraction(share, start_step=first)
    ctx.train(steps=rest, data_start=first, desc=names[1])
