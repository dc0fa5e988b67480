"""What a plan costs before it runs (``bench run --dry-run``): each trial's budget, the plan's total
training in epochs, which trials will not fit (they cost nothing), and a time estimate from a training
step measured here in a few seconds and from the suite's stated speed on the machine it is meant for.

Under ``equal`` a trial spends its budget, so its cost is its budget in dense-equivalent epochs (in the
``flops`` unit sparse methods train more steps for the same FLOPs, so their time is somewhat higher).
Under ``native`` each method runs its paper's schedule: the base run for one-shot methods, about the
rounds times the particles for IMP and SWAMP, which the estimate counts as their stated minimum at least.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pruning_bench.core.method import Method
from pruning_bench.core.steps import PlanSetting, StepCounts
from pruning_bench.core.units import UNITS
from pruning_bench.plan.fit import FIT, has_minimum, training_counts
from pruning_bench.plan.suite import Suite
from pruning_bench.plan.trial import Trial


@dataclass(frozen=True)
class TrialCost:
    trial: Trial
    epochs: float               # training it will do, in dense-equivalent epochs (0 if it does not fit)
    needs: float | None = None  # the method's minimum, as a multiple of the base run (None: fits any)


def price_plan(suite: Suite, plan: Sequence[Trial], method_for: Callable[[Trial], Method],
               counts: StepCounts | None = None) -> list[TrialCost]:
    """Each trial's training in epochs; a trial whose method's own minimum exceeds its equal budget in
    the ``epochs`` unit will be recorded as ``does_not_fit`` and costs nothing."""
    out = []
    minimum: dict[tuple[str, str, float], float | None] = {}  # one pricing per method and column, not per seed
    for trial in plan:
        at = (trial.method, repr(trial.params), trial.target_sparsity)
        if at not in minimum:
            method = method_for(trial)
            minimum[at] = None
            if has_minimum(method) and trial.target_sparsity > 0 and suite.budget.epochs > 0:
                counts = counts or training_counts(suite, trial.seed)
                setting = PlanSetting(trial.target_sparsity, counts, suite.budget.min_round)
                minimum[at] = method.min_budget_epochs(setting) / suite.budget.epochs
        needs = minimum[at]
        epochs = trial.budget_epochs
        if needs is not None and trial.budget_policy == "equal" and UNITS[trial.budget_unit].exact_minimum \
                and needs * suite.budget.epochs > trial.budget_epochs * (1 + 1e-9):
            epochs = 0.0
        elif needs is not None and trial.budget_policy == "native":
            epochs = max(epochs, needs * suite.budget.epochs)
        out.append(TrialCost(trial, epochs, needs))
    return out


def fit_summary(costs: Sequence[TrialCost]) -> list[str]:
    """One line per column of a ``fit`` level: its multiple and the method whose minimum sets it."""
    lines = []
    fit = [c for c in costs if FIT in c.trial.budget_levels and c.trial.target_sparsity > 0]
    for target in sorted({c.trial.target_sparsity for c in fit}):
        here = [c for c in fit if c.trial.target_sparsity == target]
        multiple = here[0].trial.budget_multiple
        setters = sorted({(c.needs, c.trial.method) for c in here if c.needs is not None}, reverse=True)
        who = f"; set by {setters[0][1]}, which needs {setters[0][0]:.4g}x" if setters and setters[0][0] > 1 \
            else "; every method fits the base run"
        lines.append(f"fit at {target:.4g} sparsity = {multiple:g}x the base run ({multiple * here[0].trial.suite.budget.epochs:g} "
                     f"epochs){who}")
    return lines


def total_line(costs: Sequence[TrialCost]) -> str:
    """``7,104 epochs of training in 24 trials (3 will be recorded as does_not_fit and cost nothing)``."""
    total = sum(c.epochs for c in costs)
    skipped = sum(1 for c in costs if c.epochs == 0)
    return (f"{total:,.0f} epochs of training in {len(costs) - skipped} trials"
            + (f" ({skipped} will be recorded as does_not_fit and cost nothing)" if skipped else ""))


def measured_epoch_seconds(suite: Suite, device: str | None, threads: int) -> tuple[float, str]:
    """Seconds per dense training epoch of the suite's model on this machine with ``threads`` torch
    threads: the median of single timed steps after warm-up steps (Context.measure_seconds_per_sample),
    times the training set's size. Returns (seconds, a description of where it was measured)."""
    import torch

    from pruning_bench.core.budget import BudgetMeter
    from pruning_bench.core.context import Context
    from pruning_bench.data import load_dataset
    from pruning_bench.execution.runner import device_name, pick_device
    from pruning_bench.models import build_model

    dev = pick_device(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seed = suite.seeds[0]
        data = load_dataset(suite.dataset.name, seed=seed, val_fraction=suite.dataset.val_fraction,
                            data_dir=suite.dataset.data_dir, download=False, options=suite.dataset.options)
        torch.manual_seed(seed)
        model = build_model(suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                            options=suite.model.options)
        ctx = Context(model=model, data=data, recipe=suite.recipe, meter=BudgetMeter("native", 1.0, data.n_train),
                      target_sparsity=0.0, params=None, seed=seed, device=dev, progress=False)
        per_sample = ctx.measure_seconds_per_sample()
        return per_sample * data.n_train, device_name(dev)
    finally:
        torch.set_num_threads(before)


def duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def describe_plan(suite: Suite, plan: Sequence[Trial], method_for: Callable[[Trial], Method], *, jobs: int = 1,
                  threads: int | None = None, device: str | None = None, measure: bool = True) -> list[str]:
    """The ``--dry-run`` text: every trial with its budget (or why it will not run), the fit levels, the
    total training, and the time estimates."""
    from pruning_bench.errors import BenchError
    from pruning_bench.execution.cores import available_cores

    costs = price_plan(suite, plan, method_for)
    first = plan[0]
    lines = [f"{len(plan)} trials of suite '{suite.name}' (policy {first.budget_policy}, unit {first.budget_unit}):"]
    for k, c in enumerate(costs, 1):
        what = f"{c.epochs:>8.4g} epochs" if c.epochs > 0 else \
            f"does not fit (needs {c.needs:.4g}x): recorded, not run, costs nothing"
        lines.append(f"  {k:>3}. {c.trial.label():<44} {what}  key={c.trial.key}")
    lines += [f"Budget level {line}" for line in fit_summary(costs)]
    total = sum(c.epochs for c in costs)
    lines.append(f"Total: {total_line(costs)}.")
    workers = max(1, min(jobs, sum(1 for c in costs if c.epochs > 0)))
    if measure and total > 0:
        per_trial = threads or max(1, available_cores() // workers)
        try:
            seconds, where = measured_epoch_seconds(suite, device, per_trial)
        except BenchError as err:
            from pruning_bench.data.sources import find_source

            why = (f"{suite.dataset.name} is not on this machine yet; the run downloads it first"
                   if find_source(suite.dataset.name).train_size and suite.dataset.download else str(err))
            lines.append(f"Estimate here: not measured ({why}).")
        else:
            parallel = f"; with --jobs {workers} about {duration(total * seconds / workers)}" if workers > 1 else ""
            lines.append(f"Estimate here: {seconds:.3g} s per epoch, measured now on {where} (median of single "
                         f"training steps of the suite's model) -> {duration(total * seconds)} of training in "
                         f"one process{parallel}. Evaluation and start-up add a little.")
    if suite.cost.epoch_seconds and total > 0:
        lines.append(f"Stated by the suite for {suite.cost.device or 'its target device'}: "
                     f"{suite.cost.epoch_seconds:g} s per epoch -> {duration(total * suite.cost.epoch_seconds)} on "
                     "one such device.")
    return lines
