"""Budget units as objects: what a unit counts, its limit, how a charge costs in it, whether a run fits,
and what one sample's pass is priced at when a method plans its steps.

- :class:`Epochs` counts sample passes: a training pass costs 1 and a forward-only pass 1/3 (backward = 2 x
  forward). The meter refuses an over-spend.
- :class:`Flops` counts training FLOPs: 3 x the masked forward per sample, plus declared extras (RigL's
  dense gradient). A step's price depends on the mask, so plans are priced step by step, and the training
  loop stops at the limit.
- :class:`Seconds` counts the trial's wall-clock on its device (evaluation paused). Prices are measured,
  the loop re-plans from its own step times and stops at the limit. It is not comparable across machines.

A new unit is one subclass registered in :data:`UNITS`; nothing else compares unit names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Protocol

TRAIN_FLOPS_PER_FORWARD = 3.0  # forward + backward (= 2 x forward), RigL App. H
FORWARD_PASS_SHARE = 1.0 / TRAIN_FLOPS_PER_FORWARD  # a forward-only sample pass, in training passes

if TYPE_CHECKING:
    from pruning_bench.core.budget import BudgetMeter


class Prices(Protocol):
    """What a unit needs to price a sample's pass (the Context provides it)."""

    def forward_flops(self, sparsity: float | None = None) -> float: ...

    def measured_seconds(self) -> tuple[float, float]: ...


class Unit:
    """One budget unit. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    amount: ClassVar[str]                  # how an amount in the unit reads: "sample passes"
    meter_enforces: ClassVar[bool] = True  # the meter refuses an over-spend (a planning bug)
    loop_stops_at_limit: ClassVar[bool] = True  # the training loop ends a run at the limit (estimated plans)
    mask_priced: ClassVar[bool] = False    # a step's price depends on the mask (plans price step by step)
    clocked: ClassVar[bool] = False        # the clock is the charge: prices measured, runs re-planned
    exact_minimum: ClassVar[bool] = False  # a method's minimum in epochs is exact in this unit

    def charge(self, samples: float, flops: float, forward_only: bool) -> float:
        """What a charge of ``samples`` sample passes costing ``flops`` costs in the unit."""
        raise NotImplementedError

    def used(self, meter: BudgetMeter) -> float:
        raise NotImplementedError

    def limit(self, meter: BudgetMeter) -> float:
        """The budget in the unit (NaN until the dense epoch's cost is bound)."""
        return meter.epochs * meter.epoch_cost if meter.epoch_cost is not None else math.nan

    def fits(self, meter: BudgetMeter, cost: float, seconds: float) -> bool:
        """Whether a pass costing ``cost`` (or taking about ``seconds``) stays within the limit."""
        return meter.used + cost <= meter.limit * (1 + 1e-12)

    def budget_epochs(self, meter: BudgetMeter) -> float:
        """The budget in dense-equivalent epochs."""
        return meter.epochs

    def epoch_cost(self, samples_per_epoch: int, *, dense_forward_flops: float | None = None,
                   seconds_per_sample: float | None = None) -> float | None:
        """One dense epoch in the unit, from what is known (None: not yet known)."""
        return None

    def budget_text(self, size: str) -> str:
        """How a report names a budget of ``size`` (dense-equivalent epochs) in this unit."""
        return size

    def train_price(self, prices: Prices, sparsity: float | None) -> float:
        """One sample's training pass in the unit (now, or at an estimated ``sparsity``)."""
        raise NotImplementedError

    def forward_price(self, prices: Prices, sparsity: float | None) -> float:
        """One sample's forward-only pass (BN recalibration) in the unit."""
        raise NotImplementedError


class Epochs(Unit):
    name, amount, exact_minimum, loop_stops_at_limit = "epochs", "sample passes", True, False

    def charge(self, samples: float, flops: float, forward_only: bool) -> float:
        return samples * (FORWARD_PASS_SHARE if forward_only else 1.0)

    def used(self, meter: BudgetMeter) -> float:
        return meter.samples

    def epoch_cost(self, samples_per_epoch: int, **known: float | None) -> float:
        return float(samples_per_epoch)

    def train_price(self, prices: Prices, sparsity: float | None) -> float:
        return 1.0

    def forward_price(self, prices: Prices, sparsity: float | None) -> float:
        return FORWARD_PASS_SHARE


class Flops(Unit):
    name, amount, mask_priced = "flops", "FLOPs", True

    def charge(self, samples: float, flops: float, forward_only: bool) -> float:
        return flops

    def used(self, meter: BudgetMeter) -> float:
        return meter.flops

    def epoch_cost(self, samples_per_epoch: int, *, dense_forward_flops: float | None = None,
                   seconds_per_sample: float | None = None) -> float | None:
        if dense_forward_flops is None:
            return None
        return TRAIN_FLOPS_PER_FORWARD * dense_forward_flops * samples_per_epoch

    def budget_text(self, size: str) -> str:
        return f"FLOPs of {size} dense"

    def train_price(self, prices: Prices, sparsity: float | None) -> float:
        return TRAIN_FLOPS_PER_FORWARD * prices.forward_flops(sparsity)

    def forward_price(self, prices: Prices, sparsity: float | None) -> float:
        return prices.forward_flops(sparsity)


class Seconds(Unit):
    name, amount, meter_enforces, clocked = "seconds", "s", False, True

    def charge(self, samples: float, flops: float, forward_only: bool) -> float:
        return 0.0  # the clock counts it

    def used(self, meter: BudgetMeter) -> float:
        return meter.seconds()

    def limit(self, meter: BudgetMeter) -> float:
        return float(meter.seconds_limit)

    def fits(self, meter: BudgetMeter, cost: float, seconds: float) -> bool:
        return meter.seconds() + seconds <= meter.limit

    def budget_epochs(self, meter: BudgetMeter) -> float:
        return meter.limit / meter.epoch_cost if meter.epoch_cost else math.nan

    def epoch_cost(self, samples_per_epoch: int, *, dense_forward_flops: float | None = None,
                   seconds_per_sample: float | None = None) -> float | None:
        return None if seconds_per_sample is None else seconds_per_sample * samples_per_epoch

    def budget_text(self, size: str) -> str:
        return f"seconds, about {size} on its device; not comparable across machines"

    def train_price(self, prices: Prices, sparsity: float | None) -> float:
        return prices.measured_seconds()[0]

    def forward_price(self, prices: Prices, sparsity: float | None) -> float:
        return prices.measured_seconds()[1]


UNITS: dict[str, Unit] = {unit.name: unit for unit in (Epochs(), Flops(), Seconds())}
DEFAULT_UNIT = Epochs.name


def unit_suffix(name: str) -> str:
    """`` flops`` after a budget level's multiple; nothing for the default unit."""
    return "" if name == DEFAULT_UNIT else f" {name}"


def is_clocked(name: str) -> bool:
    """Whether budgets in unit ``name`` (as recorded) are wall-clock, not comparable across machines."""
    unit = UNITS.get(name)
    return unit is not None and unit.clocked
