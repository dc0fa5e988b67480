"""The budget meter: every training sample pass is charged, so methods are compared at equal cost.

A suite states its budget in epochs of its training set. Under the ``equal`` policy every method gets
exactly that many sample passes in total (IMP's rounds and SWAMP's particles included) and the meter
stops a method that tries to spend more. Under ``native`` each method runs its paper's schedule and the
meter only records what was used. Evaluation and BN recalibration are not training passes; their cost
is recorded in FLOPs only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

POLICIES = ("equal", "native")


class BudgetExceeded(RuntimeError):
    """A method asked for more training than the ``equal`` policy allows."""


@dataclass
class BudgetMeter:
    """Counts training sample passes (forward + backward, one per sample per particle)."""

    policy: str
    epochs: float            # the suite's budget, in epochs of the training set
    samples_per_epoch: int   # size of the training split
    max_seconds: float | None = None
    used_samples: int = 0
    train_flops: float = 0.0
    extra_flops: float = 0.0  # non-training work a method asked for (saliency batches, BN recalibration)
    charges: dict[str, int] = field(default_factory=dict)  # samples by label ("train", "particle-2", ...)
    seconds_before: float = 0.0  # wall-clock spent before a resume (restored from a checkpoint)

    def __post_init__(self) -> None:
        self._started = time.perf_counter()
        if self.policy not in POLICIES:
            raise ValueError(f"unknown budget policy '{self.policy}'; valid: {', '.join(POLICIES)}")

    @property
    def total_samples(self) -> int:
        """The budget in sample passes: ``epochs`` x training-set size."""
        return round(self.epochs * self.samples_per_epoch)

    @property
    def remaining_samples(self) -> int:
        return self.total_samples - self.used_samples

    @property
    def epochs_charged(self) -> float:
        return self.used_samples / self.samples_per_epoch

    def start_clock(self) -> None:
        """Start timing the method (the clock also runs from construction)."""
        self._started = time.perf_counter()

    def seconds(self) -> float:
        """Wall-clock of the trial so far, including the time before an interruption."""
        return self.seconds_before + time.perf_counter() - self._started

    @property
    def enforced(self) -> bool:
        return self.policy == "equal"

    def charge(self, samples: int, flops: float = 0.0, label: str = "train") -> None:
        """Record ``samples`` training passes costing ``flops``; refuse to overspend under ``equal``."""
        if self.enforced and self.used_samples + samples > self.total_samples:
            raise BudgetExceeded(
                f"budget exceeded under the 'equal' policy: {self.used_samples + samples} sample passes "
                f"asked for, {self.total_samples} allowed ({self.epochs:g} epochs x {self.samples_per_epoch})"
            )
        self.used_samples += samples
        self.train_flops += flops
        self.charges[label] = self.charges.get(label, 0) + samples

    def charge_flops(self, flops: float) -> None:
        """Record extra work that is not a training pass (it costs FLOPs, not budget)."""
        self.extra_flops += flops

    def state_dict(self) -> dict:
        return {**asdict(self), "seconds_before": self.seconds()}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self._started = time.perf_counter()
