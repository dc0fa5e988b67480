"""The small parts of the training loop that are not the SGD step: where a run is (and its checkpoint),
the seconds unit's pacing, and progress with the NaN guard."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from pruning_bench.core.budget import BudgetMeter
from pruning_bench.core.callbacks import StepState, TrainCallback

HEARTBEAT_SECONDS = 30.0  # without a terminal, a progress line at most this often (long GPU trials)
REFIT_SHARES, REFIT_MIN_STEPS = (0.1, 0.5, 0.8), 10  # seconds unit: re-plan at these shares of the length


def next_refit(steps: int, done: int, shares: list[float]) -> int | None:
    """The step after which a run of (currently) ``steps`` steps next re-plans its length: the first
    remaining share of the current length past ``done`` (consumed from ``shares``); None: no more."""
    while shares:
        at = max(REFIT_MIN_STEPS, math.ceil(shares.pop(0) * steps))
        if done < at < steps:
            return at
    return None


class SecondsPacer:
    """Seconds unit: a run planned from the calibrated step time (which can be off by tens of percent
    for millisecond steps) re-plans its length after its first tenth (at least 10 steps), at half and at
    four fifths of its current length, each time from its own steps measured since the last re-plan, so
    that it spends the seconds it was planned to take. ``step_seconds`` is also the next step's expected
    time, for stopping at the limit. Inactive (no re-plans) in the other units."""

    def __init__(self, steps: int, step_seconds: float, active: bool, clock: float) -> None:
        self.step_seconds = step_seconds
        self.shares = list(REFIT_SHARES) if active and step_seconds > 0 else []
        self.refit_at = next_refit(steps, 0, self.shares)
        self.allotment, self.clock_start = steps * step_seconds, clock  # seconds this run was planned to take
        self.segment = (0, clock)  # (steps done, clock) where the current measuring segment began

    def replan(self, done: int, now: Callable[[], float]) -> int | None:
        """The run's new length when ``done`` steps is a re-plan point, else None."""
        if done != self.refit_at:
            return None
        clock = now()
        per_step = (clock - self.segment[1]) / max(done - self.segment[0], 1)
        steps = done + max(0, math.floor((self.allotment - (clock - self.clock_start)) / max(per_step, 1e-9)))
        self.segment = (done, clock)
        self.refit_at = next_refit(steps, done, self.shares)
        return steps

    def observe(self, took: float, first: bool) -> None:
        """A step took ``took`` seconds: a moving estimate of the next one."""
        self.step_seconds = took if first else 0.8 * self.step_seconds + 0.2 * took

    def state_dict(self) -> dict[str, Any]:
        return {"refit_at": self.refit_at, "shares": self.shares, "step_seconds": self.step_seconds,
                "allotment": self.allotment, "clock_start": self.clock_start, "segment": self.segment}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.refit_at, self.shares, self.step_seconds = saved["refit_at"], list(saved["shares"]), saved["step_seconds"]
        self.allotment, self.clock_start, self.segment = saved["allotment"], saved["clock_start"], tuple(saved["segment"])


@dataclass
class LoopState:
    """Where a run is: its step, current length, losses so far and per-epoch means."""

    step: int
    steps: int
    losses: list[torch.Tensor] = field(default_factory=list)
    epoch_losses: list[tuple[float, float]] = field(default_factory=list)  # (epochs charged, mean loss)
    epoch_start: int = 0  # index into losses where the current epoch began
    stopped: bool = False

    def end_epoch(self, epochs_charged: float) -> None:
        """Close the current epoch's mean loss (also a run that ends inside an epoch)."""
        self.epoch_losses.append((epochs_charged, float(torch.stack(self.losses[self.epoch_start:]).mean())))
        self.epoch_start = len(self.losses)

    def checkpoint(self, state: StepState, scheduler: object, callbacks: Sequence[TrainCallback],
                   pacer: SecondsPacer) -> dict[str, Any]:
        """Everything needed to continue after step ``self.step - 1``."""
        return {"optimizer": state.optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if hasattr(scheduler, "state_dict") else None,
                "callbacks": [cb.state_dict() for cb in callbacks], "step": self.step, "steps": self.steps,
                "epoch": state.epoch, "losses": torch.stack(self.losses) if self.losses else torch.empty(0),
                "epoch_losses": self.epoch_losses, "epoch_start": self.epoch_start, **pacer.state_dict(),
                "stopped": self.stopped}

    def restore(self, saved: dict[str, Any], state: StepState, scheduler: object,
                callbacks: Sequence[TrainCallback], pacer: SecondsPacer) -> None:
        """Continue an interrupted run where its checkpoint left it."""
        state.optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        for cb, cb_state in zip(callbacks, saved["callbacks"], strict=False):
            cb.load_state_dict(cb_state)
        self.step, self.steps, state.epoch = saved["step"], saved["steps"], saved["epoch"]
        self.losses = list(saved["losses"].unbind()) if len(saved["losses"]) else []
        self.epoch_losses, self.epoch_start = list(saved["epoch_losses"]), saved["epoch_start"]
        pacer.load_state_dict(saved)

    def loss_values(self) -> list[float]:
        """Every step's loss; a NaN anywhere is an error naming its step."""
        values = torch.stack(self.losses).float().tolist() if self.losses else []
        if any(math.isnan(v) for v in values):
            first = next(i for i, v in enumerate(values) if math.isnan(v))
            raise FloatingPointError(f"training loss became NaN (first at step {self.step - len(values) + first})")
        return values


class Progress:
    """A progress bar on a terminal, a line every :data:`HEARTBEAT_SECONDS` without one."""

    def __init__(self, steps: int, done: int, desc: str, show: bool) -> None:
        self.desc, self.show = desc, show
        self.bar = tqdm(total=steps, initial=done, desc=desc, leave=False, disable=None if show else True,
                        unit="step")
        self.last_note = time.perf_counter()

    def epoch(self, state: StepState, done: int, steps: int, loss: float, meter: BudgetMeter) -> None:
        """An epoch ended at ``loss`` (a NaN stops training here)."""
        if math.isnan(loss):
            raise FloatingPointError(f"training loss became NaN by step {state.step} (epoch {state.epoch})")
        self.bar.set_postfix(epoch=state.epoch, loss=f"{loss:.3f}")
        if self.bar.disable and self.show and time.perf_counter() - self.last_note > HEARTBEAT_SECONDS:
            self.last_note = time.perf_counter()  # no terminal for a bar: a line now and then instead
            print(f"  {self.desc}: step {done}/{steps}, epoch {state.epoch}, loss {loss:.3f}, "
                  f"{meter.epochs_charged:.1f} epochs charged", file=sys.stderr, flush=True)
