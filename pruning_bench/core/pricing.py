"""Prices and plans in the budget's unit, for one model: what a sample's pass costs (FLOPs of the current
mask, or the measured step time), and how many training steps an amount of budget pays for, priced
exactly as the training loop will charge them (the current mask's FLOPs, a dense gradient where a callback
declares one, the measured step time in the ``seconds`` unit). The Context builds one per model and
offers its plans to methods; the round planner of iterative methods prices whole plans with it.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pruning_bench.core.budget import BudgetMeter
from pruning_bench.core.callbacks import StepState, TrainCallback
from pruning_bench.core.flops import FlopProfile
from pruning_bench.core.masks import MaskSet, global_topk
from pruning_bench.core.recipe import Recipe
from pruning_bench.core.steps import StepCounts
from pruning_bench.core.training import Trainer
from pruning_bench.core.units import TRAIN_FLOPS_PER_FORWARD
from pruning_bench.data import DataBundle
from pruning_bench.seeds import mix_seed

CALIBRATION_WARMUP, CALIBRATION_STEPS = 5, 20  # seconds unit: untimed, then timed training steps


class _StepTimer(TrainCallback):
    """Wall-clock of each training step (from the end of one step to the end of the next)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync, self.seconds, self._last = sync, [], None

    def on_train_start(self, state: StepState) -> None:
        self._last = time.perf_counter()

    def on_step_end(self, state: StepState) -> None:
        self.sync()
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


class Pricing:
    """Prices and step plans for the current model of a trial (rebuilt when the model is replaced)."""

    def __init__(self, *, model: nn.Module, masks: MaskSet, trainer: Trainer, flop_profile: FlopProfile,
                 meter: BudgetMeter, data: DataBundle, recipe: Recipe, device: torch.device, seed: int,
                 target_sparsity: float) -> None:
        self.model, self.masks, self.trainer, self.flop_profile = model, masks, trainer, flop_profile
        self.budget, self.data, self.recipe, self.device, self.seed = meter, data, recipe, device, seed
        self.target_sparsity = target_sparsity
        self._seconds_per_sample: tuple[float, float] | None = None  # measured lazily (seconds unit)
        self._flops_estimates: dict[tuple[int, float], float] = {}

    @property
    def counts(self) -> StepCounts:
        """Steps and sample passes of the training set at the recipe's batch size."""
        return self.trainer.counts

    def samples_between(self, start: int, stop: int) -> int:
        """Sample passes the loop charges for global steps ``start .. stop - 1``."""
        return self.counts.samples_between(start, stop)

    @property
    def seconds_per_sample(self) -> tuple[float, float] | None:
        """The measured (training, forward) seconds per sample, or None before any measurement."""
        return self._seconds_per_sample

    def set_measured_seconds(self, measured: tuple[float, float]) -> None:
        """A step time measured before (restored from a checkpoint): bound as if measured now."""
        self._seconds_per_sample = tuple(measured)
        self.trainer.seconds_per_sample = measured[0]
        self.budget.bind_epoch_seconds(measured[0])

    def effective_flops(self) -> float:
        """Per-sample inference FLOPs of the current model with its current masks."""
        return self.flop_profile.effective(self.masks.layer_density())

    def forward_flops(self, sparsity: float | None = None) -> float:
        """Per-sample forward FLOPs now, or estimated at a higher ``sparsity`` reached by global magnitude
        pruning of the current weights (how IMP and SWAMP prune; the planner's estimate of future masks)."""
        current = self.masks.sparsity()
        if sparsity is None or sparsity <= current + 1e-9:
            return self.effective_flops()
        key = (self.masks.version, round(sparsity, 3))
        if key not in self._flops_estimates:
            scores = {n: p.detach().abs() for n, p in self.masks.params.items()}
            keep = round((1.0 - sparsity) * self.masks.total())
            masks = global_topk(scores, keep, active=self.masks.masks)
            density = {n: float(m.float().mean()) for n, m in masks.items()}
            self._flops_estimates[key] = self.flop_profile.effective(density)
        return self._flops_estimates[key]

    # ---- prices in the budget's unit ----------------------------------------------------------------
    def train_cost_per_sample(self, sparsity: float | None = None) -> float:
        """One sample's training pass in the budget's unit (now, or at an estimated ``sparsity``)."""
        return self.budget.kind.train_price(self, sparsity)

    def forward_cost_per_sample(self, sparsity: float | None = None) -> float:
        """One sample's forward-only pass (BN recalibration) in the budget's unit."""
        return self.budget.kind.forward_price(self, sparsity)

    def measured_seconds(self) -> tuple[float, float]:
        """Seconds per sample of a training pass and of a forward pass of the current model, measured
        once per model on a copy ("time the first steps, then convert"); the time counts on the clock."""
        if self._seconds_per_sample is None:
            self._seconds_per_sample = self._calibrate()
            self.trainer.seconds_per_sample = self._seconds_per_sample[0]
            self.budget.bind_epoch_seconds(self._seconds_per_sample[0])
        return self._seconds_per_sample

    def measure_seconds_per_sample(self) -> float:
        """Median seconds per sample of a training step of the current model on this device (measured on
        a copy, nothing charged); what ``--dry-run`` prices a plan with."""
        return self._calibrate()[0]

    def _calibrate(self) -> tuple[float, float]:
        """Median seconds per sample of single training steps and forward passes on a copy of the model
        (after untimed warm-up steps); the median, not the total, so one slow step does not skew it."""
        model = copy.deepcopy(self.model)
        masks = MaskSet(model)
        masks.update(self.masks.masks)
        meter = BudgetMeter("native", 1.0, self.data.n_train)
        trainer = Trainer(model=model, masks=masks, data=self.data, recipe=self.recipe, meter=meter,
                          device=self.device, flops=lambda: 0.0, seed=self.seed, progress=False)
        data_seed = mix_seed("calibration", self.seed)
        trainer.train(CALIBRATION_WARMUP, data_seed=data_seed)
        timer = _StepTimer(self._sync)
        trainer.train(CALIBRATION_STEPS, start_step=CALIBRATION_WARMUP, data_seed=data_seed, callbacks=[timer])
        train = statistics.median(timer.seconds) / self.recipe.batch_size
        stream = trainer.stream(data_seed)
        forward = []
        with torch.no_grad():
            for step in range(CALIBRATION_STEPS):
                x, _ = stream.batch(step)
                start = time.perf_counter()
                model(x)
                self._sync()
                forward.append((time.perf_counter() - start) / len(x))
        return train, statistics.median(forward)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---- plans in steps -----------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.trainer.steps_per_epoch

    @property
    def budget_epochs(self) -> float:
        """The trial's budget in dense-equivalent epochs (the base run times the multiple)."""
        return self.budget.epochs

    @property
    def spends_budget(self) -> bool:
        """True under the ``equal`` policy (the budget is a limit a method's phases share); False under
        ``native`` (each method runs its paper's schedule and the meter only records)."""
        return self.budget.enforced

    def run_steps(self) -> int:
        """Steps of the one training run a method makes after its set-up (scoring, pruning at init): what
        is left of the budget under ``equal``; a whole run of the budget under ``native``."""
        return self.remaining_steps() if self.budget.enforced else self.budget_steps

    @property
    def budget_steps(self) -> int:
        """Steps one whole budget pays for from step 0 at the current model's price (one run)."""
        return self.affordable_steps(self.budget.limit)

    def steps_for_fraction(self, fraction: float, start_step: int = 0) -> int:
        """Steps from data position ``start_step`` that ``fraction`` of the whole budget pays for."""
        return self.affordable_steps(fraction * self.budget.limit, start_step=start_step)

    def remaining_steps(self, start_step: int = 0,
                        callbacks_for: Callable[[int], Sequence[TrainCallback]] | None = None) -> int:
        """Steps from data position ``start_step`` that the rest of the budget pays for."""
        return self.affordable_steps(None, start_step=start_step, callbacks_for=callbacks_for)

    def epochs_to_steps(self, epochs: float, start_step: int = 0) -> int:
        """Steps from ``start_step`` whose sample passes add up to at most ``epochs`` epochs (any unit)."""
        return self.trainer.steps_for_samples(round(epochs * self.data.n_train), start_step)

    def affordable_steps(self, amount: float | None = None, *, start_step: int = 0,
                         callbacks_for: Callable[[int], Sequence[TrainCallback]] | None = None,
                         sparsity_at: Callable[[int], Callable[[int], float]] | None = None) -> int:
        """The most training steps from data position ``start_step`` whose charges fit in ``amount`` of
        the budget's unit (default: what is left), priced as the loop will charge them.

        ``callbacks_for(T)`` gives the callbacks a ``T``-step run would use (their ``dense_gradient``
        steps cost more FLOPs); ``sparsity_at(T)`` the mask sparsity at each step of a ``T``-step run
        whose mask changes while it trains (its FLOPs are estimated per step).
        """
        amount = self.budget.remaining if amount is None else amount
        if not amount > 0:
            return 0
        plain = self.trainer.steps_for_samples(math.floor(amount / self.train_cost_per_sample() + 1e-9), start_step)
        if not self.budget.kind.mask_priced or (callbacks_for is None and sparsity_at is None):
            return plain
        hi = plain
        if sparsity_at is not None:  # the mask thins while training: at most the target's price per step
            cheapest = TRAIN_FLOPS_PER_FORWARD * self.forward_flops(self.target_sparsity)
            hi = self.trainer.steps_for_samples(math.floor(amount / cheapest + 1e-9), start_step)
        lo = 0
        while lo < hi:  # the price of T steps grows with T: the largest T that fits, by bisection
            mid = (lo + hi + 1) // 2
            if self._price(mid, start_step, callbacks_for, sparsity_at) <= amount * (1 + 1e-12):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _price(self, steps: int, start_step: int, callbacks_for, sparsity_at) -> float:
        callbacks = callbacks_for(steps) if callbacks_for else ()
        sparsity = sparsity_at(steps) if sparsity_at else None
        now = self.effective_flops()
        total = 0.0
        for step in range(start_step, start_step + steps):
            n = self.trainer.batch_size_at(step)
            f_s = self.forward_flops(sparsity(step)) if sparsity else now
            total += self.trainer.step_flops(n, f_s, any(cb.dense_gradient(step) for cb in callbacks))
        return total

    # ---- what a planner reads of the budget ----------------------------------------------------------
    @property
    def left(self) -> float:
        """What is left of the budget, in its unit."""
        return self.budget.remaining

    @property
    def plans_are_estimates(self) -> bool:
        """Under ``equal`` in ``flops`` and ``seconds`` a plan rests on estimates (future masks, step times)
        and the loop stops at the limit; in ``epochs`` plans are exact."""
        return self.budget.stops_at_limit

    def epochs_once_spent(self, amount: float) -> float:
        """Dense-equivalent epochs the trial will have spent after ``amount`` more of the unit."""
        return self.budget.to_epochs(self.budget.used + amount)

    @property
    def epoch_cost_known(self) -> bool:
        """Whether a dense epoch's cost in the unit is known yet (bound or measured)."""
        return bool(self.budget.epoch_cost)

    def in_epochs(self, amount: float) -> float:
        """``amount`` of the unit as dense-equivalent epochs (NaN while a dense epoch's cost is unknown)."""
        return self.budget.to_epochs(amount)

    def measured_per_sample(self) -> float | None:
        """Clocked units: seconds per sample pass spent so far, all overheads included (None elsewhere)."""
        if self.budget.kind.clocked and self.budget.samples > 0:
            return self.budget.seconds() / self.budget.samples
        return None

    @property
    def epochs_charged(self) -> float:
        """Sample passes charged so far, in epochs of the training set."""
        return self.budget.epochs_charged
