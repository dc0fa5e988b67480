"""The budget meter: every pass a method makes is charged, in the budget's unit, so methods are compared
at equal cost.

A trial's budget has a *unit* and a *level*. The level is a multiple of the suite's base run
(``budget.epochs``); the unit says what is counted:

- ``epochs``: sample passes. A training pass (forward + backward) of one sample costs 1; a forward-only
  pass (BN recalibration) costs 1/3, as in the FLOPs convention below (backward = 2 x forward). The limit
  is ``epochs x training-set size``.
- ``flops``: training FLOPs: 3 x the masked model's forward FLOPs per sample (RigL App. H), the forward
  FLOPs for a forward-only pass, and whatever extra a step declares (RigL's dense gradient). The limit
  is the FLOPs of ``epochs`` dense epochs, so sparse-from-the-start methods get more steps.
- ``seconds``: wall-clock of the trial on its device; evaluation is not counted (the clock is paused
  while the harness or a method evaluates). Not comparable across machines.

Policies: ``equal`` (the default: the limit is enforced) and ``native`` (each method runs its paper's
schedule; the meter only records). Under ``equal`` an over-spend in the ``epochs`` unit is a planning
bug and raises :class:`BudgetExceeded`; in ``flops`` and ``seconds``, where a plan can rest on estimates
(future masks, measured step times), the training loop stops at the limit instead (:meth:`fits`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from pruning_bench.core.units import FORWARD_PASS_SHARE, TRAIN_FLOPS_PER_FORWARD, UNITS, Unit

POLICIES = ("equal", "native")
__all__ = ["FORWARD_PASS_SHARE", "POLICIES", "TRAIN_FLOPS_PER_FORWARD", "UNITS", "BudgetExceeded", "BudgetMeter",
           "Charge", "DoesNotFit"]


class BudgetExceeded(RuntimeError):
    """A method asked for more than the ``equal`` policy allows."""


class DoesNotFit(Exception):  # noqa: N818 - an outcome, not an error: the trial is recorded, the sweep goes on
    """A method's own algorithm does not fit in the trial's budget; it is not run as something else.

    ``min_budget_epochs`` is the smallest budget, in (dense-equivalent) epochs, at which it would fit.
    """

    def __init__(self, message: str, min_budget_epochs: float) -> None:
        super().__init__(message)
        self.min_budget_epochs = min_budget_epochs


@dataclass
class Charge:
    """What one label (``train``, ``particle-2``, ``scoring``, ``bn-recalibration``, ...) was charged."""

    samples: float = 0.0  # sample-pass equivalents (a forward-only pass counts 1/3)
    flops: float = 0.0
    passes: int = 0       # number of charge calls (steps or batches)


@dataclass
class BudgetMeter:
    """Counts what a trial spends and enforces the limit under ``equal``.

    ``epochs`` is the trial's budget in dense-equivalent epochs (multiple x the suite's base). For the
    ``flops`` unit the Context binds the dense model's FLOPs (:meth:`bind_dense_flops`); for ``seconds``
    the limit is ``seconds_limit`` and the cost of a dense epoch is measured (:meth:`bind_epoch_seconds`).
    """

    policy: str
    epochs: float
    samples_per_epoch: int
    unit: str = "epochs"
    seconds_limit: float | None = None
    max_seconds: float | None = None  # optional wall-clock cap (any unit): the trial fails past it
    epoch_cost: float | None = None   # one dense epoch in the unit (converts the budget to epochs)
    samples: float = 0.0
    flops: float = 0.0
    charges: dict[str, Charge] = field(default_factory=dict)
    seconds_before: float = 0.0       # clock time before a resume (restored from a checkpoint)
    stops: int = 0                    # training runs the loop ended at the limit (flops / seconds)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown budget policy '{self.policy}'; valid: {', '.join(POLICIES)}")
        if self.unit not in UNITS:
            raise ValueError(f"unknown budget unit '{self.unit}'; valid: {', '.join(UNITS)}")
        if self.kind.clocked and not self.seconds_limit:
            raise ValueError(f"the '{self.unit}' budget unit needs seconds_limit > 0")
        if self.epoch_cost is None:
            self.epoch_cost = self.kind.epoch_cost(self.samples_per_epoch)
        self._started = time.perf_counter()
        self._paused_at: float | None = None
        self._paused_total = 0.0

    # ---- the limit, in the unit ----------------------------------------------------------------------
    @property
    def kind(self) -> Unit:
        """The unit's rules (:mod:`pruning_bench.core.units`); ``unit`` is its name, as recorded."""
        return UNITS[self.unit]

    def bind_dense_flops(self, forward_flops: float) -> None:
        """``flops`` unit: one dense epoch costs 3 x the dense forward FLOPs x the training-set size."""
        if self.epoch_cost is None:
            self.epoch_cost = self.kind.epoch_cost(self.samples_per_epoch, dense_forward_flops=forward_flops)

    def bind_epoch_seconds(self, seconds_per_sample: float) -> None:
        """``seconds`` unit: the measured cost of a dense epoch (to express the budget in epochs)."""
        if self.epoch_cost is None:
            self.epoch_cost = self.kind.epoch_cost(self.samples_per_epoch, seconds_per_sample=seconds_per_sample)

    @property
    def limit(self) -> float:
        """The budget in the unit: sample passes, FLOPs or seconds (NaN until the unit is bound)."""
        return self.kind.limit(self)

    @property
    def used(self) -> float:
        return self.kind.used(self)

    @property
    def remaining(self) -> float:
        return self.limit - self.used

    @property
    def budget_epochs(self) -> float:
        """The budget in dense-equivalent epochs of the training set (what the trial was given)."""
        return self.kind.budget_epochs(self)

    def to_epochs(self, amount: float) -> float:
        """An amount in the unit, as dense-equivalent epochs."""
        return amount / self.epoch_cost if self.epoch_cost else math.nan

    @property
    def enforced(self) -> bool:
        return self.policy == "equal"

    @property
    def stops_at_limit(self) -> bool:
        """Whether the training loop ends a run at the limit (instead of the meter raising)."""
        return self.enforced and self.kind.loop_stops_at_limit

    # legacy names used across the harness and tests
    @property
    def total_samples(self) -> int:
        """The budget in sample passes (``epochs`` unit)."""
        return round(self.epochs * self.samples_per_epoch)

    @property
    def used_samples(self) -> float:
        return self.samples

    @property
    def remaining_samples(self) -> float:
        return self.total_samples - self.samples

    @property
    def epochs_charged(self) -> float:
        """Sample-pass equivalents charged, in epochs of the training set."""
        return self.samples / self.samples_per_epoch

    # ---- the clock -----------------------------------------------------------------------------------
    def start_clock(self) -> None:
        """Start timing the method (the clock also runs from construction)."""
        self._started = time.perf_counter()
        self._paused_total = 0.0

    def seconds(self) -> float:
        """Wall-clock of the trial so far (paused time excluded, time before a resume included)."""
        now = self._paused_at if self._paused_at is not None else time.perf_counter()
        return self.seconds_before + now - self._started - self._paused_total

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clock for a block (evaluation is never charged); nests."""
        if self._paused_at is not None:
            yield
            return
        self._paused_at = time.perf_counter()
        try:
            yield
        finally:
            self._paused_total += time.perf_counter() - self._paused_at
            self._paused_at = None

    # ---- charging ------------------------------------------------------------------------------------
    def cost(self, samples: float, flops: float, *, forward_only: bool = False) -> float:
        """What a charge costs in the unit (0 for ``seconds``: the clock counts it)."""
        return self.kind.charge(samples, flops, forward_only)

    def fits(self, cost: float, seconds: float = 0.0) -> bool:
        """Whether a pass costing ``cost`` (or taking about ``seconds``) stays within the limit."""
        return not self.enforced or self.kind.fits(self, cost, seconds)

    def charge(self, samples: float, flops: float = 0.0, label: str = "train", *,
               forward_only: bool = False) -> None:
        """Record ``samples`` sample passes costing ``flops``; refuse to overspend under ``equal``
        (``epochs`` and ``flops`` units; ``seconds`` is enforced by the training loop)."""
        cost = self.cost(samples, flops, forward_only=forward_only)
        if self.enforced and self.kind.meter_enforces and not self.fits(cost):
            raise BudgetExceeded(
                f"budget exceeded under the 'equal' policy: {self._fmt(self.used + cost)} asked for, "
                f"{self._fmt(self.limit)} allowed ({self.epochs:g} epochs x {self.samples_per_epoch} samples)")
        equivalents = samples * (FORWARD_PASS_SHARE if forward_only else 1.0)
        self.samples += equivalents
        self.flops += flops
        entry = self.charges.setdefault(label, Charge())
        entry.samples += equivalents
        entry.flops += flops
        entry.passes += 1

    def _fmt(self, amount: float) -> str:
        return f"{amount:.6g} {self.kind.amount}"

    # ---- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = asdict(self)
        state["seconds_before"] = self.seconds()
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key == "charges":
                value = {k: Charge(**v) if isinstance(v, dict) else v for k, v in value.items()}
            setattr(self, key, value)
        self.start_clock()
