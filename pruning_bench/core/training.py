"""The one training loop every method shares, and evaluation.

Same optimizer (SGD with momentum and weight decay on every parameter, as OpenLTH does), same learning
rate schedule, augmentation and precision for every method. Methods change the loop only through
callbacks (an extra loss term, a gradient edit, skipping an optimizer step), never by writing their own.

Per step: forward -> loss (+ callbacks' extra terms) -> backward -> ``after_backward`` callbacks (dense
gradients visible) -> gradients of pruned weights zeroed -> optimizer step (unless a callback vetoes it)
-> masks re-applied -> ``on_step_end`` callbacks.

Each step is charged to the budget meter before it runs: its samples, and its FLOPs, 3 x the masked
forward per sample, or 2 x the masked forward + the dense forward on a step where a callback declares
it uses the dense gradient (:meth:`TrainCallback.dense_gradient`; RigL App. H). Under ``equal`` in the
``flops`` and ``seconds`` units a run ends at the first step that would pass the limit
(``TrainResult.stopped_at_limit``); in ``seconds`` a run re-plans its length from its own measured steps
(:class:`~pruning_bench.core.loop_state.SecondsPacer`).

The schedule position (``start_step`` of a ``schedule_steps`` run) and the data position
(``data_start``) are separate: a fine-tune that restarts its learning-rate schedule continues the data
stream instead of replaying the first epochs' batches, while IMP's rounds rewind both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pruning_bench import stopping
from pruning_bench.core import evaluation
from pruning_bench.core.budget import TRAIN_FLOPS_PER_FORWARD, BudgetExceeded, BudgetMeter
from pruning_bench.core.callbacks import StepState, TrainCallback
from pruning_bench.core.evaluation import EvalResult, evaluate, recalibrate_bn, uses_channels_last
from pruning_bench.core.loop_state import LoopState, Progress, SecondsPacer
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.recipe import Recipe
from pruning_bench.core.schedule import LRSchedule, make_optimizer
from pruning_bench.core.steps import StepCounts
from pruning_bench.data import BatchStream, DataBundle

if TYPE_CHECKING:
    from pruning_bench.core.resume import CallCheckpoint

__all__ = ["EvalResult", "LRSchedule", "StepState", "TrainCallback", "TrainResult", "Trainer", "evaluate",
           "make_optimizer", "recalibrate_bn", "result_record", "uses_channels_last"]


@dataclass
class TrainResult:
    optimizer: torch.optim.Optimizer
    end_step: int
    steps: int
    mean_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)
    epoch_losses: list[tuple[float, float]] = field(default_factory=list)  # (epochs charged, mean loss)
    stopped_at_limit: bool = False  # the budget's limit ended the run before ``steps`` steps


def result_record(result: TrainResult) -> dict[str, Any]:
    """A :class:`TrainResult` without its optimizer (saved with a finished call's checkpoint)."""
    return {k: getattr(result, k) for k in ("end_step", "steps", "mean_loss", "seconds", "losses",
                                            "epoch_losses", "stopped_at_limit")}


@dataclass
class _Run:
    """One ``Trainer.train`` call's fixed parts: the step state callbacks see, its schedule and stream."""

    state: StepState
    stream: BatchStream
    scheduler: Any              # a scheduler_factory's scheduler, or None: the suite's schedule
    schedule: LRSchedule | None
    own_schedule: bool          # the schedule ends with the run (stretched when the run is re-planned)
    start_step: int
    data_offset: int            # data position minus schedule position
    callbacks: Sequence[TrainCallback]
    label: str
    stops_at_limit: bool        # the meter's rules, read once per run, not per step
    clocked: bool


class Trainer:
    """Runs training steps on a model, charging every sample pass to a budget meter."""

    def __init__(self, *, model: nn.Module, masks: MaskSet, data: DataBundle, recipe: Recipe,
                 meter: BudgetMeter, device: torch.device, flops: Callable[[], float],
                 seed: int, progress: bool = True, dense_flops: float = 0.0) -> None:
        self.model, self.masks, self.data, self.recipe = model, masks, data, recipe
        self.meter, self.device, self.seed = meter, device, seed
        self.forward_flops = flops          # current per-sample forward FLOPs (depends on the masks)
        self.dense_flops = dense_flops      # per-sample forward FLOPs of the unmasked model
        self.seconds_per_sample = 0.0       # measured (seconds unit): the first step's time estimate
        self.progress = progress
        self.use_amp = device.type == "cuda"
        self.channels_last = uses_channels_last(device, data.input_shape)
        self._streams: dict[tuple[int, int], BatchStream] = {}
        self._flops_version, self._fwd_flops = -1, 0.0  # forward FLOPs cached per mask version

    def stream(self, data_seed: int | None = None, batch_size: int | None = None) -> BatchStream:
        """The training batches for ``data_seed`` (default: the trial's seed), cached per seed."""
        key = (self.seed if data_seed is None else data_seed, batch_size or self.recipe.batch_size)
        if key not in self._streams:
            self._streams[key] = BatchStream(
                self.data.train_x, self.data.train_y, batch_size=key[1], data_seed=key[0],
                augmentation=self.data.augmentation, mean=self.data.mean, std=self.data.std,
                device=self.device, channels_last=self.channels_last)
        return self._streams[key]

    @property
    def counts(self) -> StepCounts:
        """Steps and sample passes of the training set at the recipe's batch size."""
        return StepCounts(self.data.n_train, self.recipe.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.counts.steps_per_epoch

    def batch_size_at(self, step: int) -> int:
        """Samples in the batch of ``step`` (the last batch of an epoch is smaller)."""
        return self.counts.batch_size_at(step)

    def samples_between(self, start: int, stop: int) -> int:
        """Sample passes charged for global steps ``start .. stop - 1``."""
        return self.counts.samples_between(start, stop)

    def steps_for_samples(self, samples: int, start_step: int = 0) -> int:
        """The most steps from ``start_step`` whose batches add up to at most ``samples``."""
        return self.counts.steps_for_samples(samples, start_step)

    def schedule(self, total_steps: int) -> LRSchedule:
        warmup = round(self.recipe.warmup_epochs * self.steps_per_epoch)
        return LRSchedule(self.recipe, total_steps, warmup)

    def step_flops(self, samples: int, forward_flops: float, dense_gradient: bool = False) -> float:
        """Training FLOPs of one step: 3 f_S per sample, or 2 f_S + f_D with the dense gradient."""
        if dense_gradient:
            return samples * ((TRAIN_FLOPS_PER_FORWARD - 1) * forward_flops + self.dense_flops)
        return samples * TRAIN_FLOPS_PER_FORWARD * forward_flops

    def train(self, steps: int, *, start_step: int = 0, schedule_steps: int | None = None,
              data_seed: int | None = None, data_start: int | None = None,
              callbacks: Sequence[TrainCallback] = (), optimizer: torch.optim.Optimizer | None = None,
              scheduler_factory: Callable[[torch.optim.Optimizer], object] | None = None,
              label: str = "train", desc: str = "train", checkpoint: CallCheckpoint | None = None,
              resume: dict[str, Any] | None = None) -> TrainResult:
        """Train for ``steps`` steps, the schedule positioned at ``start_step`` of a ``schedule_steps`` run.

        A fresh optimizer is built unless one is passed (to continue with its momentum). The learning
        rate follows the suite's schedule over ``schedule_steps`` (default ``start_step + steps``), or
        the scheduler ``scheduler_factory(optimizer)`` returns (stepped once per step). Batches come from
        the data stream at ``data_start`` onwards (default: ``start_step``, the schedule position).
        ``checkpoint`` saves the loop's state every few minutes (:mod:`pruning_bench.core.resume`);
        ``resume`` is such a state (already restored: weights, masks, meter, RNG) to continue from.
        """
        run = self._begin(steps, start_step, schedule_steps, data_seed, data_start, callbacks, optimizer,
                          scheduler_factory, label)
        loop = LoopState(step=start_step, steps=steps)
        pacer = SecondsPacer(steps, self.seconds_per_sample * self.recipe.batch_size,
                             self.meter.stops_at_limit and self.meter.kind.clocked, self.meter.seconds())
        if resume is not None:
            loop.restore(resume, run.state, run.scheduler, callbacks, pacer)
            self._set_length(run, loop.steps)
        save = None if checkpoint is None else \
            (lambda final, **extra: self._save(checkpoint, loop, run, pacer, final, extra))
        progress = Progress(loop.steps, loop.step - start_step, desc, self.progress)
        t0 = time.perf_counter()
        while loop.step < start_step + loop.steps:
            if stopping.requested():  # told to stop (SIGINT / SIGTERM): save here, end as interrupted
                if save is not None and loop.step > start_step:
                    save(final=False)
                raise stopping.StopRequested(f"stopped at step {loop.step} ({label}); the checkpoint resumes it")
            if save is not None and loop.step > start_step and checkpoint.due():
                save(final=False)
            length = pacer.replan(loop.step - start_step, self.meter.seconds)
            if length is not None:  # seconds unit: re-planned from the steps measured since the last plan
                loop.steps = progress.bar.total = length
                self._set_length(run, length)
            if not self._step(run, loop, pacer, progress):
                break
        progress.bar.close()
        if len(loop.losses) > loop.epoch_start:  # the run ended inside an epoch: its last point covers that part
            loop.end_epoch(self.meter.epochs_charged)
        values = loop.loss_values()
        result = TrainResult(optimizer=run.state.optimizer, end_step=start_step + len(values), steps=len(values),
                             mean_loss=sum(values) / max(len(values), 1), seconds=time.perf_counter() - t0,
                             losses=values, epoch_losses=loop.epoch_losses, stopped_at_limit=loop.stopped)
        if save is not None:  # a phase boundary: a rerun skips this call
            save(final=True, result=result_record(result))
        return result

    def _begin(self, steps: int, start_step: int, schedule_steps: int | None, data_seed: int | None,
               data_start: int | None, callbacks: Sequence[TrainCallback],
               optimizer: torch.optim.Optimizer | None,
               scheduler_factory: Callable[[torch.optim.Optimizer], object] | None, label: str) -> _Run:
        """The optimizer and schedule placed at ``start_step``, the model in training mode, masks applied."""
        self._flops_version = -1
        optimizer = optimizer or make_optimizer(self.model, self.recipe)
        scheduler = scheduler_factory(optimizer) if scheduler_factory is not None else None
        schedule = None
        if scheduler is None:
            schedule = self.schedule(schedule_steps or (start_step + steps))
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(start_step)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.masks.apply()
        state = StepState(model=self.model, optimizer=optimizer, masks=self.masks, step=start_step)
        for cb in callbacks:
            cb.on_train_start(state)
        own = scheduler is None and (schedule_steps is None or schedule_steps == start_step + steps)
        offset = (start_step if data_start is None else data_start) - start_step
        return _Run(state, self.stream(data_seed), scheduler, schedule, own, start_step, offset, callbacks, label,
                    self.meter.stops_at_limit, self.meter.kind.clocked)

    def _set_length(self, run: _Run, steps: int) -> None:
        """A re-planned (or resumed) run of ``steps`` steps: a schedule that ends with it follows."""
        if run.own_schedule:
            run.schedule = self.schedule(run.start_step + steps)

    def _save(self, checkpoint: CallCheckpoint, loop: LoopState, run: _Run, pacer: SecondsPacer, final: bool,
              extra: dict[str, Any]) -> None:
        with self.meter.paused():
            checkpoint.save({**loop.checkpoint(run.state, run.scheduler, run.callbacks, pacer), **extra},
                            final=final)

    def _step(self, run: _Run, loop: LoopState, pacer: SecondsPacer, progress: Progress) -> bool:
        """One SGD step, charged before it runs; False when it would pass the budget's limit."""
        step, state, callbacks, meter = loop.step, run.state, run.callbacks, self.meter
        state.step = step
        if self.masks.version != self._flops_version:
            self._flops_version, self._fwd_flops = self.masks.version, self.forward_flops()
        spe = run.stream.steps_per_epoch
        n = self.batch_size_at(spe - 1) if (step + run.data_offset) % spe == spe - 1 else self.recipe.batch_size
        flops = self.step_flops(n, self._fwd_flops, bool(callbacks) and any(cb.dense_gradient(step) for cb in callbacks))
        if run.stops_at_limit and not meter.fits(meter.cost(n, flops), pacer.step_seconds):
            meter.stops += 1
            loop.stopped = True
            return False
        step_start = time.perf_counter()
        if run.scheduler is None:
            lr = run.schedule.lr(step)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
        x, y = run.stream.batch(step + run.data_offset)
        meter.charge(len(y), flops=flops, label=run.label)
        if meter.max_seconds is not None:
            self._check_wall_clock()
        loss = self._forward_backward(state, x, y, callbacks)
        if run.scheduler is not None:
            run.scheduler.step()
        loop.losses.append(loss.detach())
        for cb in callbacks:
            cb.on_step_end(state)
        if run.clocked:  # the next step's time, for stopping at the limit
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            pacer.observe(time.perf_counter() - step_start, first=step == run.start_step)
        if (step + run.data_offset + 1) % spe == 0:  # a pass over the data ends
            state.epoch = (step + run.data_offset + 1) // spe
            loop.end_epoch(meter.epochs_charged)
            progress.epoch(state, step + 1 - run.start_step, loop.steps, float(loss.detach()), meter)
            for cb in callbacks:
                cb.on_epoch_end(state)
        progress.bar.update()
        loop.step += 1
        return True

    def _forward_backward(self, state: StepState, x: torch.Tensor, y: torch.Tensor,
                          callbacks: Sequence[TrainCallback]) -> torch.Tensor:
        """Loss (with the callbacks' extra terms), backward, pruned gradients zeroed, step, masks re-applied."""
        state.inputs, state.targets = x, y
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else nullcontext():
            out = self.model(x)
            loss = evaluation.output_loss(out.float(), y, label_smoothing=self.recipe.label_smoothing)
        state.outputs, state.loss = out, loss
        for cb in callbacks:
            extra = cb.extra_loss(state)
            if extra is not None:
                loss = loss + extra
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for cb in callbacks:
            cb.after_backward(state)
        self.masks.mask_grads()
        if not any(cb.skip_optimizer_step(state) for cb in callbacks):
            state.optimizer.step()
            self.masks.apply()
        return loss

    def _check_wall_clock(self) -> None:
        cap = self.meter.max_seconds
        if cap is not None and self.meter.seconds() > cap:
            raise BudgetExceeded(f"wall-clock cap of {cap:g} s reached")
