"""What a method may use: the model, its masks, the shared training loop, evaluation, the budget meter,
snapshots for rewinding, per-round logging and per-round checkpoints.

A method never builds loaders, optimizers, devices, timers or MLflow calls itself, and never prices its
own work: it asks the Context. Every pass over training data goes through the Context and is charged to
the budget meter in the budget's unit (``pruning_bench.core.budget``): training steps (``train``), scoring
batches (``batches``), BN recalibration (``recalibrate_bn``). Evaluation is never charged. Plans are made
in steps: ``remaining_steps``, ``steps_for_fraction`` and ``affordable_steps`` price steps exactly as the
training loop will charge them (the current mask's FLOPs, a dense gradient where a callback declares one,
the measured step time in the ``seconds`` unit).
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pruning_bench.core.budget import TRAIN_FLOPS_PER_FORWARD, BudgetMeter
from pruning_bench.core.flops import FlopProfile, profile_flops
from pruning_bench.core.masks import MaskSet, global_topk
from pruning_bench.core.recipe import MIN_ROUND_SHARE, Recipe
from pruning_bench.core.resume import DEFAULT_EVERY_SECONDS, TrialCheckpoints, atomic_save, read_checkpoint
from pruning_bench.core.training import (
    EvalResult,
    StepState,
    TrainCallback,
    Trainer,
    TrainResult,
    evaluate,
    make_optimizer,
    recalibrate_bn,
)
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


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator a trial draws from (torch, CUDA, numpy, Python, the method's)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "generator": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(rng: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    generator.set_state(rng["generator"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class Context:
    """Services a method uses during one trial."""

    def __init__(self, *, model: nn.Module, data: DataBundle, recipe: Recipe, meter: BudgetMeter,
                 target_sparsity: float, params: Any, seed: int, device: torch.device,
                 checkpoint_dir: Path | None = None, log_fn: Callable[[str, float, int | None], None] | None = None,
                 series_fn: Callable[[str, list[tuple[int, float]]], None] | None = None,
                 progress: bool = True, min_round_epochs: float | None = None,
                 checkpoint_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
        self.data, self.recipe, self.budget = data, recipe, meter
        self.target_sparsity, self.params, self.seed, self.device = target_sparsity, params, seed, device
        self.checkpoint_dir = checkpoint_dir
        #: mid-trial checkpoints of every training call; a rerun replays the method through them
        self.checkpoints = TrialCheckpoints(checkpoint_dir, checkpoint_seconds, self._capture, self._restore)
        self._log_fn = log_fn
        self._series_fn = series_fn  # one batched write per training run (the loss curve)
        self.progress = progress
        #: the shortest round an iterative method may run (the suite's ``budget.min_round_epochs``)
        self.min_round_epochs = min_round_epochs if min_round_epochs is not None else MIN_ROUND_SHARE * meter.epochs
        self.generator = torch.Generator().manual_seed(seed)  # for a method's own randomness
        self.logged: list[tuple[str, float, int | None]] = []
        self._set_model(model)
        self.budget.bind_dense_flops(self.flop_profile.total)

    # ---- model and masks -------------------------------------------------------------------------
    def _set_model(self, model: nn.Module) -> None:
        self.model = model.to(self.device)
        self.masks = MaskSet(self.model)
        self.flop_profile: FlopProfile = profile_flops(self.model, self.data.input_shape, self.device,
                                                       self.masks.names)
        self.trainer = Trainer(model=self.model, masks=self.masks, data=self.data, recipe=self.recipe,
                               meter=self.budget, device=self.device, flops=self.effective_flops,
                               seed=self.seed, progress=self.progress, dense_flops=self.flop_profile.total)
        self._seconds_per_sample: tuple[float, float] | None = None  # measured lazily (seconds unit)
        self._flops_estimates: dict[tuple[int, float], float] = {}

    def replace_model(self, model: nn.Module) -> None:
        """Swap in a physically smaller model (structured pruning); its masks start all-ones."""
        self._set_model(model)

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

    # ---- training ---------------------------------------------------------------------------------
    def train(self, epochs: float | None = None, *, steps: int | None = None, start_step: int = 0,
              schedule_steps: int | None = None, data_seed: int | None = None, data_start: int | None = None,
              callbacks: Sequence[TrainCallback] = (), optimizer: torch.optim.Optimizer | None = None,
              scheduler_factory: Callable[[torch.optim.Optimizer], object] | None = None,
              label: str = "train", desc: str | None = None) -> TrainResult:
        """Train with the suite's recipe for ``epochs`` (or ``steps``); see :meth:`Trainer.train`.

        ``start_step``/``schedule_steps`` place the run inside a longer learning-rate schedule (IMP
        continues the schedule from the rewind step); ``data_start`` is the position in the data stream
        (default ``start_step``; a fine-tune with a restarted schedule continues the stream);
        ``data_seed`` picks the data order (SWAMP's particles differ only in it). Every step is charged.
        """
        if (epochs is None) == (steps is None):
            raise ValueError("give exactly one of epochs or steps")
        n = steps if steps is not None else self.epochs_to_steps(epochs)
        if self.budget.kind.clocked:
            self.measured_seconds()  # the loop's first step-time estimate
        call = self.checkpoints.begin_call({
            "steps": n, "start_step": start_step, "schedule_steps": schedule_steps, "data_seed": data_seed,
            "data_start": data_start, "label": label, "callbacks": [type(cb).__name__ for cb in callbacks]})
        done = call.completed()
        if done is not None:  # a rerun: this call finished before the interruption; its end state is loaded
            result = self._replayed(done, callbacks, optimizer)
        else:
            result = self.trainer.train(n, start_step=start_step, schedule_steps=schedule_steps,
                                        data_seed=data_seed, data_start=data_start, callbacks=callbacks,
                                        optimizer=optimizer, scheduler_factory=scheduler_factory, label=label,
                                        desc=desc or label, checkpoint=call, resume=call.partial())
        if self._series_fn is not None and result.epoch_losses:  # x = epochs charged so far in the trial
            self._series_fn("train_loss", [(round(e), loss) for e, loss in result.epoch_losses])
        return result

    def _replayed(self, loop: dict[str, Any], callbacks: Sequence[TrainCallback],
                  optimizer: torch.optim.Optimizer | None) -> TrainResult:
        """The result of a training call that finished before an interruption (its state is loaded)."""
        optimizer = optimizer or make_optimizer(self.model, self.recipe)
        optimizer.load_state_dict(loop["optimizer"])
        for cb, cb_state in zip(callbacks, loop["callbacks"]):
            cb.load_state_dict(cb_state)
        return TrainResult(optimizer=optimizer, **loop["result"])

    def _capture(self) -> dict[str, Any]:
        """Everything outside the training loop that a checkpoint holds (:mod:`pruning_bench.core.resume`)."""
        return {"model": self.model.state_dict(), "masks": self.masks.masks, "meter": self.budget.state_dict(),
                "rng": rng_states(self.generator), "logged": list(self.logged),
                "seconds_per_sample": self._seconds_per_sample}

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.masks.update(state["masks"])
        self.masks.apply()
        self.budget.load_state_dict(state["meter"])
        set_rng_states(state["rng"], self.generator)
        if state.get("seconds_per_sample") is not None:  # absent from round checkpoints of older versions
            self._seconds_per_sample = tuple(state["seconds_per_sample"])
            self.trainer.seconds_per_sample = self._seconds_per_sample[0]
            self.budget.bind_epoch_seconds(self._seconds_per_sample[0])
        for key, value, step in state["logged"][len(self.logged):]:  # logged inside calls not run again
            self.log(key, value, step)

    def lr_at(self, step: int, schedule_steps: int) -> float:
        """The learning rate the suite's schedule gives at ``step`` of a ``schedule_steps`` run."""
        return self.trainer.schedule(schedule_steps).lr(step)

    def batches(self, n: int, *, data_seed: int | None = None, start_step: int = 0,
                batch_size: int | None = None, label: str = "scoring",
                forward_only: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` training batches (augmented, normalised, on the device) for saliency scoring, each charged
        as it is drawn: as a training pass (forward + backward), or a forward-only pass."""
        stream = self.trainer.stream(data_seed, batch_size)
        for i in range(n):
            x, y = stream.batch(start_step + i)
            self.charge_passes(len(y), label=label, forward_only=forward_only)
            yield x, y

    def charge_passes(self, samples: float, *, label: str, forward_only: bool = False) -> None:
        """Charge passes a method makes outside the training loop and ``batches`` (SynFlow's data-free
        input, GraSP's Hessian-gradient product), priced at the current model and mask: a training pass
        (forward + backward) per sample, or a forward-only pass."""
        flops = samples * self.effective_flops() * (1.0 if forward_only else TRAIN_FLOPS_PER_FORWARD)
        self.budget.charge(samples, flops, label=label, forward_only=forward_only)

    def recalibration_samples(self, fraction: float = 1.0) -> int:
        """Samples :meth:`recalibrate_bn` passes for ``fraction`` of an epoch (for planning)."""
        return self.trainer.counts.recalibration_samples(fraction)

    def recalibrate_bn(self, model: nn.Module | None = None, fraction: float = 1.0,
                       data_seed: int | None = None) -> None:
        """Recompute BN running statistics on ``fraction`` of an epoch of training batches, charged as
        forward-only passes (label ``bn-recalibration``)."""
        n = self.trainer.counts.recalibration_steps(fraction)
        recalibrate_bn(model or self.model, self.batches(n, data_seed=data_seed, label="bn-recalibration",
                                                         forward_only=True))

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> EvalResult:
        """Accuracy and loss on ``val`` (for any choice a method makes) or ``test`` (reporting only).
        Never charged: the budget's clock is paused while it runs."""
        if split not in ("val", "test", "train"):
            raise ValueError(f"unknown split '{split}'; valid: val, test, train")
        x, y = {"val": (self.data.val_x, self.data.val_y), "test": (self.data.test_x, self.data.test_y),
                "train": (self.data.train_x, self.data.train_y)}[split]
        with self.budget.paused():
            return evaluate(model or self.model, x, y, self.data, device=self.device,
                            batch_size=self.recipe.eval_batch_size)

    # ---- rewinding and logging ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A copy of the model's weights and buffers and the masks (for rewinding)."""
        return {"model": copy.deepcopy(self.model.state_dict()),
                "masks": {n: m.clone() for n, m in self.masks.masks.items()}}

    def restore(self, snap: dict[str, Any], *, masks: bool = True) -> None:
        """Load a snapshot's weights (and, by default, its masks); current masks are re-applied."""
        self.model.load_state_dict(snap["model"])
        if masks:
            self.masks.update(snap["masks"])
        self.masks.apply()

    def log(self, key: str, value: float, step: int | None = None) -> None:
        """Record a per-round metric in the trial's MLflow run (``step`` = round)."""
        self.logged.append((key, float(value), step))
        if self._log_fn is not None:
            self._log_fn(key, float(value), step)

    # ---- checkpoints (resume an interrupted iterative method) -----------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save what a training call's checkpoint holds (:meth:`_capture`) and ``state``, atomically."""
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        payload = {**self._capture(), "state": state, "barrier": self.checkpoints.barrier + 1}
        atomic_save(payload, self.checkpoint_dir / "checkpoint.pt")
        self.checkpoints.passed_barrier()
        self.checkpoints.wrote(self.checkpoint_dir / "checkpoint.pt")

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Restore what :meth:`save_checkpoint` saved and return its ``state``; None if there is none."""
        if self.checkpoint_dir is None:
            return None
        # CPU: RNG states must stay CPU byte tensors; load_state_dict / masks.update move the rest
        path = self.checkpoint_dir / "checkpoint.pt"
        existed = path.is_file()
        payload = read_checkpoint(path)
        if payload is None:
            if existed:  # unreadable (warned): what came after that round cannot be replayed: start afresh
                self.checkpoints.clear()
            return None
        self._restore(payload)  # and the interrupted run's per-round metrics are logged again
        self.checkpoints.resumed_at_barrier(payload.get("barrier", 0))
        return payload["state"]
