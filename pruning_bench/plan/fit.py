"""The ``fit`` budget level: in each sparsity column, the smallest budget at which every method of the plan
runs as itself.

Each method states its own minimum through :meth:`pruning_bench.core.method.Method.min_budget_epochs` (IMP and
SWAMP: their rounds, each at least the suite's ``min_round_epochs`` long, times their particles; a method
without the hook fits any budget). The level is resolved when the plan is made, before anything trains:
per column, the largest minimum of the methods in it, as a multiple of the suite's base run, rounded *up*
to two significant digits (the grid: 1, 1.1, ..., 9.9, 10, 11, ..., 99, 100, 110, ...) and never below the
base run (1x). The same plan therefore always resolves to the same multiples and the same trial keys, and a
trial records the multiple it resolved to (its key) and the level it was asked for (a tag).

The minimum is exact in the ``epochs`` unit and an upper bound in ``flops`` (pruned rounds cost less than
dense ones). In ``seconds`` it is the same multiple of the suite's base run in seconds, which fits as far as
that base run matches this machine's speed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pruning_bench.core.steps import PlanSetting, StepCounts
from pruning_bench.errors import BenchError

if TYPE_CHECKING:
    from pruning_bench.core.method import Method
    from pruning_bench.plan.suite import Suite

FIT = "fit"
GRID_DIGITS = 2       # fit multiples are rounded up to this many significant digits


def level_name(multiple: float) -> str:
    """A numeric budget level's name: ``2x``, ``0.5x``."""
    return f"{multiple:g}x"


def parse_level(item: str | float, where: str) -> float | str:
    """``fit`` or a multiple > 0 of the suite's base run (``4``, ``4x``, ``0.5``)."""
    if isinstance(item, str):
        text = item.strip().lower()
        if text == FIT:
            return FIT
        try:
            value = float(text.removesuffix("x"))
        except ValueError:
            raise BenchError(f"{where}: '{item}' is not a budget level; give multiples of the suite's base run "
                             "or fit, e.g. 1,4,fit") from None
    elif isinstance(item, bool) or not isinstance(item, int | float):
        raise BenchError(f"{where}: {item!r} is not a budget level; give multiples of the suite's base run "
                         "or \"fit\", e.g. [1, \"fit\"]")
    else:
        value = float(item)
    if not (0 < value < 1e6):
        raise BenchError(f"{where}: budget multiple {value:g} is out of range; it must be > 0, e.g. 1, 4 or 0.5")
    return value


def round_up_multiple(x: float) -> float:
    """``x`` rounded up to :data:`GRID_DIGITS` significant digits, at least 1 (the base run)."""
    if not x > 1.0:
        return 1.0
    scale = 10.0 ** (GRID_DIGITS - 1 - math.floor(math.log10(x)))
    steps = math.ceil(x * scale - 1e-9)  # a minimum on the grid (4.5) stays there
    while steps / scale < x:              # ... but never below the minimum itself
        steps += 1
    return steps / scale


def has_minimum(method: Method) -> bool:
    """Whether the method states a minimum budget (overrides ``Method.min_budget_epochs``)."""
    from pruning_bench.core.method import Method

    return type(method).min_budget_epochs is not Method.min_budget_epochs


def fit_multiples(suite: Suite, columns: dict[float, Sequence[Method]],
                  counts: StepCounts | None) -> dict[float, float]:
    """Per column (target sparsity), the ``fit`` multiple of the suite's base run for the methods in it.
    ``counts`` may be None when no method has a minimum (then every column fits at 1x)."""
    out = {}
    for target, methods in columns.items():
        need = 0.0
        for method in methods:
            if has_minimum(method):
                if counts is None:
                    raise ValueError("a method with a minimum budget needs the training set's step counts")
                setting = PlanSetting(target, counts, suite.budget.min_round)
                need = max(need, method.min_budget_epochs(setting))
        out[target] = round_up_multiple(need / suite.budget.epochs)
    return out


def training_counts(suite: Suite, seed: int) -> StepCounts:
    """Steps and sample passes of the suite's training set (after the validation hold-out), at the
    recipe's batch size. The data set is read as it is on disk, without downloading; one that is not
    there yet and has a fixed published size (CIFAR, Tiny ImageNet: the download is checksummed) is
    priced at that size."""
    from pruning_bench.data import load_dataset
    from pruning_bench.data.sources import find_source

    try:
        data = load_dataset(suite.dataset.name, seed=seed, val_fraction=suite.dataset.val_fraction,
                            data_dir=suite.dataset.data_dir, download=False, options=suite.dataset.options)
        n_train = data.n_train
    except BenchError:
        size = find_source(suite.dataset.name).train_size
        if size is None or not suite.dataset.download:
            raise
        n_train = size - int(round(size * suite.dataset.val_fraction))
    return StepCounts(n_train, suite.recipe.batch_size)


def needs_counts(methods: Iterable[Method]) -> bool:
    return any(has_minimum(m) for m in methods)
