"""Trials and the plan: the grid method x sparsity x budget level x seed, each trial with a stable key.

A trial's key is a hash of its canonical configuration (suite's experiment config, method name and
resolved parameters, target sparsity, seed, budget policy, unit and multiple) plus
:data:`pruning_bench.RESULT_VERSION`. The same key means the same experiment, so a finished key is never
run twice unless asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pruning_bench import RESULT_VERSION
from pruning_bench.method import Method
from pruning_bench.suite import Suite


@dataclass(frozen=True)
class Trial:
    suite: Suite
    method: str
    params: Any           # the method's Params dataclass instance
    target_sparsity: float
    seed: int
    budget_policy: str
    budget_unit: str = "epochs"
    budget_multiple: float = 1.0

    def config(self) -> dict[str, Any]:
        """The canonical, JSON-able description hashed into the key."""
        return {
            "suite": self.suite.experiment_config(),
            "method": self.method,
            "params": dataclasses.asdict(self.params),
            "target_sparsity": round(self.target_sparsity, 6),
            "seed": self.seed,
            "budget_policy": self.budget_policy,
            "budget_unit": self.budget_unit,
            "budget_multiple": round(self.budget_multiple, 6),
            "result_version": RESULT_VERSION,
        }

    @property
    def key(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def variant(self) -> str:
        """The parameters that differ from the method's defaults, ``k=v, ...`` ('' when none)."""
        return non_default_params(self.params)

    @property
    def budget_epochs(self) -> float:
        """The budget in dense-equivalent epochs (the base run times the multiple)."""
        return self.suite.budget.epochs * self.budget_multiple

    def label(self) -> str:
        name = f"{self.method}[{self.variant}]" if self.variant else self.method
        unit = "" if self.budget_unit == "epochs" else f" {self.budget_unit}"
        return f"{name} s={self.target_sparsity:g} seed={self.seed} {self.budget_multiple:g}x{unit}"


def non_default_params(params: Any) -> str:
    """``k=v`` for every field of a Params dataclass that differs from its default, comma-separated."""
    if not dataclasses.is_dataclass(params):
        return ""
    try:
        defaults = type(params)()
    except TypeError:  # a plugin's Params without defaults: every field is "its own"
        defaults = None
    parts = [f"{f.name}={getattr(params, f.name)!r}".replace("'", "") for f in dataclasses.fields(params)
             if defaults is None or getattr(params, f.name) != getattr(defaults, f.name)]
    return ", ".join(parts)


@dataclass(frozen=True)
class MethodSpec:
    """A method of the plan: its class and parameter overrides on top of the suite's ``[method_params]``
    (``--methods 'imp,imp[prune_fraction=0.5]'`` runs both, as separate rows)."""

    cls: type[Method]
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def params(self, suite: Suite) -> Any:
        values = {**suite.method_params.get(self.cls.name, {}), **self.overrides}
        where = f"{suite.source}: " if not self.overrides else f"{suite.source} + {self.cls.name}[...]: "
        return self.cls.parse_params(values, where=where)


def build_plan(suite: Suite, methods: Sequence[type[Method] | MethodSpec], sparsities: Sequence[float],
               seeds: Sequence[int], budget_policy: str, *, multiples: Sequence[float] | None = None,
               unit: str | None = None, params: dict[str, Any] | None = None) -> list[Trial]:
    """Every (method, budget multiple, sparsity, seed) trial, in a stable order. A method that does not
    prune (the dense baseline) gets one trial per seed and multiple at sparsity 0, one with a fixed
    sparsity (N:M) at its own (``Method.target_sparsities``). ``params`` maps a
    method name to a ready Params instance (tests); otherwise the suite's ``[method_params]``."""
    params = params or {}
    unit = unit or suite.budget.unit
    trials: list[Trial] = []
    for multiple in (multiples or suite.budget.multiples):
        for entry in methods:
            spec = entry if isinstance(entry, MethodSpec) else MethodSpec(entry)
            p = params.get(spec.cls.name) if not spec.overrides else None
            p = p or spec.params(suite)
            for sparsity in spec.cls.target_sparsities(p, sparsities):
                for seed in seeds:
                    trials.append(Trial(suite, spec.cls.name, p, float(sparsity), int(seed), budget_policy,
                                        unit, float(multiple)))
    return list({t.key: t for t in trials}.values())  # "0.5,0.50" or "0,0" is one experiment, run once
