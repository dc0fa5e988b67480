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
(``TrainResult.stopped_at_limit``). In ``seconds`` a run planned from the calibrated step time re-plans
its length after its first tenth (at least 10 steps), at half and at four fifths of its current length,
each time from its own steps measured since the last re-plan, so that it spends the seconds it was planned to take; a schedule that
ends with the run is stretched or shortened with it.

The schedule position (``start_step`` of a ``schedule_steps`` run) and the data position
(``data_start``) are separate: a fine-tune that restarts its learning-rate schedule continues the data
stream instead of replaying the first epochs' batches, while IMP's rounds rewind both.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pruning_bench import stopping
from pruning_bench.core.budget import TRAIN_FLOPS_PER_FORWARD, BudgetExceeded, BudgetMeter
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.recipe import Recipe
from pruning_bench.core.steps import StepCounts
from pruning_bench.data import BatchStream, DataBundle, iterate_batches

if TYPE_CHECKING:
    from pruning_bench.core.resume import CallCheckpoint

HEARTBEAT_SECONDS = 30.0  # without a terminal, a progress line at most this often (long GPU trials)
REFIT_SHARES, REFIT_MIN_STEPS = (0.1, 0.5, 0.8), 10  # seconds unit: re-plan at these shares of the length


def uses_channels_last(device: torch.device, input_shape: tuple[int, ...]) -> bool:
    """channels_last for image models on CUDA only (measured slower or neutral elsewhere)."""
    return device.type == "cuda" and len(input_shape) == 3


class LRSchedule:
    """Learning-rate factor as a function of the step, for a run of ``total_steps`` steps.

    ``cosine``: 0.5 (1 + cos(pi t / T)); ``step``: x ``gamma`` at each milestone (fractions of T);
    ``constant``. An optional linear warm-up from 0 over ``warmup_steps`` multiplies the factor.
    """

    def __init__(self, recipe: Recipe, total_steps: int, warmup_steps: int = 0) -> None:
        self.recipe = recipe
        self.total_steps = max(total_steps, 1)
        self.warmup_steps = warmup_steps

    def factor(self, step: int) -> float:
        t = min(step, self.total_steps)
        if self.recipe.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * t / self.total_steps))
        elif self.recipe.schedule == "step":
            f = self.recipe.gamma ** sum(t >= round(m * self.total_steps) for m in self.recipe.milestones)
        else:
            f = 1.0
        if self.warmup_steps and step < self.warmup_steps:
            f *= (step + 1) / self.warmup_steps
        return f

    def lr(self, step: int) -> float:
        return self.recipe.lr * self.factor(step)


@dataclass
class StepState:
    """What callbacks see at each step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    masks: MaskSet
    step: int                 # position in the learning-rate schedule (global step)
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    epoch: int = 0


class TrainCallback:
    """Hooks into the shared training loop. Override what you need."""

    def on_train_start(self, state: StepState) -> None: ...

    def extra_loss(self, state: StepState) -> torch.Tensor | None:
        return None

    def after_backward(self, state: StepState) -> None:
        """Gradients are dense here (before pruned weights' gradients are zeroed)."""

    def skip_optimizer_step(self, state: StepState) -> bool:
        return False

    def dense_gradient(self, step: int) -> bool:
        """Whether step ``step`` uses the dense gradient of every prunable weight (RigL's grow step).
        The loop then charges it 2 x masked + 1 x dense forward FLOPs per sample instead of 3 x masked."""
        return False

    def on_step_end(self, state: StepState) -> None: ...

    def on_epoch_end(self, state: StepState) -> None:
        """Called after each completed pass over the training data (``state.epoch`` just finished)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this callback (:mod:`pruning_bench.core.resume`). By default its data
        attributes: numbers, strings, tensors (not parameters: the model's own are restored with it),
        modules' state, and lists, sets and dicts of these. Override when that is not enough."""
        return {k: v for k, v in ((k, _state_of(v)) for k, v in vars(self).items()) if v is not _SKIP}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned; tensors are copied in place, so aliases hold."""
        for key, value in state.items():
            setattr(self, key, _load_into(getattr(self, key, None), value))


_SKIP = object()
_PLAIN = (bool, int, float, str, bytes, type(None))


def _state_of(value: Any) -> Any:
    """The saveable state of a callback attribute, or ``_SKIP`` (a reference to the model, masks,
    optimizer, context or a function: restored elsewhere or not state)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, nn.Parameter):
        return _SKIP
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, nn.Module):
        return {"__module_state__": value.state_dict()}
    if isinstance(value, (list, tuple, set)):
        items = [_state_of(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else type(value)(items)
    if isinstance(value, dict):
        items = {k: _state_of(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in items.values()) else items
    return _SKIP


def _load_into(current: Any, saved: Any) -> Any:
    """``saved`` put into ``current`` in place where both are tensors, modules or containers of them."""
    if isinstance(saved, dict) and "__module_state__" in saved and isinstance(current, nn.Module):
        current.load_state_dict(saved["__module_state__"])
        return current
    if isinstance(current, torch.Tensor) and isinstance(saved, torch.Tensor) and current.shape == saved.shape:
        with torch.no_grad():
            current.copy_(saved)
        return current
    if isinstance(current, dict) and isinstance(saved, dict) and current.keys() == saved.keys():
        for k in saved:
            current[k] = _load_into(current[k], saved[k])
        return current
    if isinstance(current, list) and isinstance(saved, list) and len(current) == len(saved):
        current[:] = [_load_into(c, v) for c, v in zip(current, saved)]
        return current
    return saved


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


@dataclass(frozen=True)
class EvalResult:
    acc: float
    loss: float
    top5: float | None
    n: int


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay)


def _next_refit(steps: int, done: int, shares: list[float]) -> int | None:
    """Seconds unit: the step after which a run of (currently) ``steps`` steps next re-plans its length
    from its own measured step time (the calibration's estimate can be off by tens of percent for
    millisecond steps): the first remaining share of the current length past ``done``; None: no more."""
    while shares:
        at = max(REFIT_MIN_STEPS, math.ceil(shares.pop(0) * steps))
        if done < at < steps:
            return at
    return None


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
        model, masks = self.model, self.masks
        stream = self.stream(data_seed)
        optimizer = optimizer or make_optimizer(model, self.recipe)
        if scheduler_factory is not None:
            scheduler = scheduler_factory(optimizer)
        else:
            schedule = self.schedule(schedule_steps or (start_step + steps))
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(start_step)
            scheduler = None
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        masks.apply()
        state = StepState(model=model, optimizer=optimizer, masks=masks, step=start_step)
        for cb in callbacks:
            cb.on_train_start(state)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else nullcontext()
        flops_version, fwd_flops = -1, 0.0
        losses: list[torch.Tensor] = []
        epoch_losses: list[tuple[float, float]] = []
        epoch_start = 0  # index into losses where the current epoch began
        data_offset = (start_step if data_start is None else data_start) - start_step
        step_seconds = self.seconds_per_sample * self.recipe.batch_size  # the seconds unit's estimate
        shares = list(REFIT_SHARES) if self.meter.stops_at_limit and self.meter.kind.clocked and \
            step_seconds > 0 else []
        refit_at = _next_refit(steps, 0, shares)
        allotment, clock_start = steps * step_seconds, self.meter.seconds()  # seconds this run was planned to take
        segment = (0, clock_start)  # (steps done, clock) where the current measuring segment began
        own_schedule = scheduler is None and (schedule_steps is None or schedule_steps == start_step + steps)
        stopped = False
        step = start_step
        if resume is not None:  # continue an interrupted run where its checkpoint left it
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None and resume["scheduler"] is not None:
                scheduler.load_state_dict(resume["scheduler"])
            for cb, cb_state in zip(callbacks, resume["callbacks"]):
                cb.load_state_dict(cb_state)
            step, steps, state.epoch = resume["step"], resume["steps"], resume["epoch"]
            losses = list(resume["losses"].unbind()) if len(resume["losses"]) else []
            epoch_losses, epoch_start = list(resume["epoch_losses"]), resume["epoch_start"]
            refit_at, shares, step_seconds = resume["refit_at"], list(resume["shares"]), resume["step_seconds"]
            allotment, clock_start, segment = resume["allotment"], resume["clock_start"], tuple(resume["segment"])
            if own_schedule:
                schedule = self.schedule(start_step + steps)

        def loop_state(at: int) -> dict[str, Any]:
            """The loop's position after step ``at - 1``, with everything needed to continue from it."""
            return {"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if hasattr(scheduler, "state_dict") else None,
                    "callbacks": [cb.state_dict() for cb in callbacks], "step": at, "steps": steps,
                    "epoch": state.epoch, "losses": torch.stack(losses) if losses else torch.empty(0),
                    "epoch_losses": epoch_losses, "epoch_start": epoch_start, "refit_at": refit_at,
                    "shares": shares, "step_seconds": step_seconds, "allotment": allotment,
                    "clock_start": clock_start, "segment": segment, "stopped": stopped}

        # per-step constants, hoisted out of the loop (its own overhead is measured in benchmarks/)
        spe, batch_size = stream.steps_per_epoch, self.recipe.batch_size
        last_batch = self.batch_size_at(spe - 1)
        stops_at_limit, wall_clock_cap = self.meter.stops_at_limit, self.meter.max_seconds is not None
        smoothing = self.recipe.label_smoothing
        t0 = last_note = time.perf_counter()
        bar = tqdm(total=steps, initial=step - start_step, desc=desc, leave=False,
                   disable=None if self.progress else True, unit="step")
        while step < start_step + steps:
            if stopping.requested():  # told to stop (SIGINT / SIGTERM): save here, end as interrupted
                if checkpoint is not None and step > start_step:
                    with self.meter.paused():
                        checkpoint.save(loop_state(step), final=False)
                raise stopping.StopRequested(f"stopped at step {step} ({label}); the checkpoint resumes it")
            if checkpoint is not None and step > start_step and checkpoint.due():
                with self.meter.paused():
                    checkpoint.save(loop_state(step), final=False)
            done = step - start_step
            if done == refit_at:  # seconds unit: re-plan the run from the steps measured since the last plan
                now = self.meter.seconds()
                per_step = (now - segment[1]) / max(done - segment[0], 1)
                steps = done + max(0, math.floor((allotment - (now - clock_start)) / max(per_step, 1e-9)))
                segment, bar.total = (done, now), steps
                refit_at = _next_refit(steps, done, shares)
                if own_schedule:
                    schedule = self.schedule(start_step + steps)
            state.step = step
            if masks.version != flops_version:
                flops_version, fwd_flops = masks.version, self.forward_flops()
            n = last_batch if (step + data_offset) % spe == spe - 1 else batch_size
            flops = self.step_flops(n, fwd_flops, bool(callbacks) and any(cb.dense_gradient(step) for cb in callbacks))
            if stops_at_limit and not self.meter.fits(self.meter.cost(n, flops), step_seconds):
                self.meter.stops += 1
                stopped = True
                break
            step_start = time.perf_counter()
            if scheduler is None:
                lr = schedule.lr(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            x, y = stream.batch(step + data_offset)
            self.meter.charge(len(y), flops=flops, label=label)
            if wall_clock_cap:
                self._check_wall_clock()
            state.inputs, state.targets = x, y
            with autocast:
                out = model(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=smoothing)
            state.outputs, state.loss = out, loss
            for cb in callbacks:
                extra = cb.extra_loss(state)
                if extra is not None:
                    loss = loss + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for cb in callbacks:
                cb.after_backward(state)
            masks.mask_grads()
            if not any(cb.skip_optimizer_step(state) for cb in callbacks):
                optimizer.step()
                masks.apply()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.detach())
            for cb in callbacks:
                cb.on_step_end(state)
            if self.meter.kind.clocked:  # the next step's time, for stopping at the limit
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                took = time.perf_counter() - step_start
                step_seconds = took if step == start_step else 0.8 * step_seconds + 0.2 * took
            if (step + data_offset + 1) % stream.steps_per_epoch == 0:  # a pass over the data ends
                state.epoch = (step + data_offset + 1) // stream.steps_per_epoch
                current = float(loss.detach())
                epoch_losses.append((self.meter.epochs_charged, float(torch.stack(losses[epoch_start:]).mean())))
                epoch_start = len(losses)
                if math.isnan(current):
                    raise FloatingPointError(f"training loss became NaN by step {step} (epoch {state.epoch})")
                bar.set_postfix(epoch=state.epoch, loss=f"{current:.3f}")
                if bar.disable and self.progress and time.perf_counter() - last_note > HEARTBEAT_SECONDS:
                    last_note = time.perf_counter()  # no terminal for a bar: a line now and then instead
                    print(f"  {desc}: step {step + 1 - start_step}/{steps}, epoch {state.epoch}, "
                          f"loss {current:.3f}, {self.meter.epochs_charged:.1f} epochs charged",
                          file=sys.stderr, flush=True)
                for cb in callbacks:
                    cb.on_epoch_end(state)
            bar.update()
            step += 1
        bar.close()
        if len(losses) > epoch_start:  # the run ended inside an epoch: its last point covers that part
            epoch_losses.append((self.meter.epochs_charged, float(torch.stack(losses[epoch_start:]).mean())))
        loss_values = torch.stack(losses).float().tolist() if losses else []
        if any(math.isnan(v) for v in loss_values):
            raise FloatingPointError(f"training loss became NaN (first at step "
                                     f"{start_step + next(i for i, v in enumerate(loss_values) if math.isnan(v))})")
        done = len(loss_values)
        result = TrainResult(optimizer=optimizer, end_step=start_step + done, steps=done,
                             mean_loss=sum(loss_values) / max(done, 1),
                             seconds=time.perf_counter() - t0, losses=loss_values, epoch_losses=epoch_losses,
                             stopped_at_limit=stopped)
        if checkpoint is not None:  # a phase boundary: a rerun skips this call
            with self.meter.paused():
                checkpoint.save({**loop_state(step), "result": result_record(result)}, final=True)
        return result

    def _check_wall_clock(self) -> None:
        cap = self.meter.max_seconds
        if cap is not None and self.meter.seconds() > cap:
            raise BudgetExceeded(f"wall-clock cap of {cap:g} s reached")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, data: DataBundle, *,
             device: torch.device, batch_size: int = 1024) -> EvalResult:
    """Top-1 (and top-5 where there are more than 5 classes) accuracy and mean loss, in eval mode."""
    if len(y) == 0:
        return EvalResult(acc=float("nan"), loss=float("nan"), top5=None, n=0)
    was_training = model.training
    model.eval()
    correct = correct5 = 0
    loss_sum = 0.0
    channels_last = uses_channels_last(device, data.input_shape)
    for xb, yb in iterate_batches(x, y, batch_size=batch_size, mean=data.mean, std=data.std,
                                  device=device, channels_last=channels_last):
        out = model(xb).float()
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
        if data.num_classes > 5:
            correct5 += int((out.topk(5, dim=1).indices == yb[:, None]).any(1).sum())
    model.train(was_training)
    n = len(y)
    return EvalResult(acc=correct / n, loss=loss_sum / n, top5=correct5 / n if data.num_classes > 5 else None, n=n)


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Recompute BatchNorm running statistics from ``batches`` (``torch.optim.swa_utils.update_bn``)."""
    torch.optim.swa_utils.update_bn((x for x, _ in batches), model)
