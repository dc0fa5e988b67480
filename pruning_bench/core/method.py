"""The method plugin interface: a named class with a typed parameter dataclass and ``run(ctx)``.

A method decides *what* to train and prune; everything else (data, devices, the optimizer, timing,
MLflow) it asks of the :class:`~pruning_bench.core.context.Context`. That keeps every method comparable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pruning_bench.errors import BenchError

if TYPE_CHECKING:
    from pruning_bench.core.context import Context
    from pruning_bench.core.steps import PlanSetting


@dataclass(frozen=True)
class NoParams:
    """For methods without parameters."""


class Method:
    """Base class of every pruning method.

    Subclasses set ``name`` (the registry name), ``Params`` (a frozen dataclass whose defaults come from
    the method's paper) and implement :meth:`run`. ``prunes = False`` marks a method that ignores the
    target sparsity (the dense baseline): it gets one trial per seed, at sparsity 0. ``structured = True``
    marks a method that physically shrinks the model; ``granularity`` (``unstructured``,
    ``semi_structured``, ``structured``) is recorded as a tag the report reads.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    prunes: ClassVar[bool] = True
    structured: ClassVar[bool] = False
    granularity: ClassVar[str] = ""  # "" = "structured" if ``structured`` else "unstructured"
    #: a control of another method's trial (``reinit``, ``shuffle``, ``scratch``): needs ``source=M``
    control: ClassVar[bool] = False

    @classmethod
    def granularity_of(cls) -> str:
        return cls.granularity or ("structured" if cls.structured else "unstructured")

    @classmethod
    def granularity_for(cls, params: Any) -> str:
        """A trial's granularity with ``params``: :meth:`granularity_of`, except that the N:M variant of an
        unstructured method (parameters ``n`` and ``m`` > 0, e.g. ``sparsegpt[n=2,m=4]``) is
        ``semi_structured``."""
        if cls.granularity_of() == "unstructured" and getattr(params, "n", 0) and getattr(params, "m", 0):
            return "semi_structured"
        return cls.granularity_of()

    @classmethod
    def target_sparsities(cls, params: Any, requested: Sequence[float]) -> list[float]:
        """The target sparsities this method runs at, given the requested ones: all of them; only 0 for a
        method that does not prune; a method with a fixed sparsity (N:M) returns its own."""
        return list(requested) if cls.prunes else [0.0]

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @classmethod
    def parse_params(cls, values: Mapping[str, Any], where: str = "") -> Any:
        """Build ``Params`` from a mapping, with a one-line error for an unknown key or a bad type."""
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        for key, value in values.items():
            if key not in fields:
                raise BenchError(f"{where}method '{cls.name}' has no parameter '{key}'; "
                                 f"valid: {', '.join(fields) or '(none)'}")
            default = getattr(cls.Params(), key)
            if default is not None and not _same_kind(default, value):
                raise BenchError(f"{where}parameter '{cls.name}.{key}' must be {type(default).__name__}, "
                                 f"got {value!r}")
        values = {k: float(v) if isinstance(getattr(cls.Params(), k), float) else v for k, v in values.items()}
        params = cls.Params(**values)
        validate = getattr(params, "validate", None)
        if validate is not None:
            try:
                validate()
            except (ValueError, TypeError) as err:
                raise BenchError(f"{where}method '{cls.name}': {err}") from None
        return params

    @classmethod
    def source_of(cls, params: Any) -> str:
        """The method whose trial this one controls (``reinit[source=imp]`` -> ``imp``); '' for a method
        that stands alone. A control runs after its source's trial of the same cell and seed and reads
        that trial's result as ``ctx.source`` (:mod:`pruning_bench.core.source`)."""
        return ""

    def min_budget_epochs(self, setting: PlanSetting) -> float:
        """The smallest budget, in dense-equivalent epochs of the training set, at which this method runs
        as itself (its own schedule, not a shortened stand-in), priced before anything trains. The
        ``fit`` budget level (:mod:`pruning_bench.plan.fit`) gives every method of a column the largest of
        these. A method that adapts to any budget keeps this default, 0. One that raises
        :class:`~pruning_bench.core.budget.DoesNotFit` should override it with the same number."""
        return 0.0

    def run(self, ctx: Context) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))
