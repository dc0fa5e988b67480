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
from pruning_bench.core.method import Method
from pruning_bench.core.steps import StepCounts
from pruning_bench.core.units import unit_suffix
from pruning_bench.errors import BenchError
from pruning_bench.plan.fit import FIT, fit_multiples, level_name, needs_counts, training_counts
from pruning_bench.plan.suite import Suite


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
    #: the budget levels of the plan this trial stands for ("2x", "fit"); not part of the key: a ``fit``
    #: level that resolves to 2x is the same experiment as the 2x level, run once
    budget_levels: tuple[str, ...] = ()
    #: a control's source trial (same cell, seed and budget, method ``Method.source_of(params)``); '' if none
    source_key: str = ""

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
        } | ({"source_key": self.source_key} if self.source_key else {})

    @property
    def key(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def variant(self) -> str:
        """The parameters that differ from the method's defaults in this suite (its ``[method_params]``
        over the paper's defaults), ``k=v, ...`` ('' when none): ``imp[prune_fraction=0.5]``."""
        return non_default_params(self.params, suite_defaults(self.params, self.suite.method_params.get(self.method)))

    @property
    def budget_epochs(self) -> float:
        """The budget in dense-equivalent epochs (the base run times the multiple)."""
        return self.suite.budget.epochs * self.budget_multiple

    @property
    def level_tag(self) -> str:
        """The ``budget_level`` tag: the plan's levels this trial stands for, e.g. ``fit`` or ``2x,fit``."""
        return ",".join(sorted(self.budget_levels or (level_name(self.budget_multiple),)))

    def label(self) -> str:
        name = f"{self.method}[{self.variant}]" if self.variant else self.method
        fit = "fit=" if FIT in self.budget_levels else ""
        return f"{name} s={self.target_sparsity:g} seed={self.seed} {fit}{self.budget_multiple:g}x" + \
            unit_suffix(self.budget_unit)


def suite_defaults(params: Any, overrides: Mapping[str, Any] | None) -> Any:
    """The Params a suite gives a method by default: its dataclass defaults with the suite's
    ``[method_params]`` over them (None for a plugin's Params without defaults)."""
    if not dataclasses.is_dataclass(params):
        return None
    try:
        defaults = type(params)()
    except TypeError:  # a plugin's Params without defaults: every field is "its own"
        return None
    values = {k: float(v) if isinstance(getattr(defaults, k), float) and not isinstance(v, bool) else v
              for k, v in (overrides or {}).items() if hasattr(defaults, k)}
    return dataclasses.replace(defaults, **values)


def non_default_params(params: Any, defaults: Any = ...) -> str:
    """``k=v`` for every field of a Params dataclass that differs from ``defaults`` (by default the
    dataclass's own defaults), comma-separated."""
    if not dataclasses.is_dataclass(params):
        return ""
    if defaults is ...:
        defaults = suite_defaults(params, None)
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
               seeds: Sequence[int], budget_policy: str, *, multiples: Sequence[float | str] | None = None,
               unit: str | None = None, params: dict[str, Any] | None = None,
               counts: StepCounts | None = None) -> list[Trial]:
    """Every (method, budget level, sparsity, seed) trial, in a stable order. A method that does not
    prune (the dense baseline) gets one trial per seed and multiple at sparsity 0, one with a fixed
    sparsity (N:M) at its own (``Method.target_sparsities``). ``params`` maps a
    method name to a ready Params instance (tests); otherwise the suite's ``[method_params]``.

    A ``fit`` level resolves per column (:mod:`pruning_bench.plan.fit`); the dense baseline gets a trial at
    each column's fit multiple. ``counts`` (the training set's steps) is read from the data set when a
    method needs it and it is not given. Trials that are the same experiment (the same key) are merged,
    keeping every level they stand for."""
    unit = unit or suite.budget.unit
    entries = _entries(suite, methods, sparsities, params or {})
    levels = list(multiples or suite.budget.multiples)
    fit: dict[float, float] = {}
    if FIT in levels:
        columns: dict[float, list[Method]] = {}
        for e in entries:
            for target in e.targets if e.cls.prunes else ():
                columns.setdefault(target, []).append(e.cls(e.params))
        instances = [m for ms in columns.values() for m in ms]
        if counts is None and needs_counts(instances):
            counts = training_counts(suite, int(seeds[0]))
        fit = fit_multiples(suite, columns, counts)
    trials: dict[str, Trial] = {}
    for level in levels:
        for e in entries:
            for sparsity in e.targets:
                for multiple in _multiples_at(level, sparsity, e.cls.prunes, fit):
                    name = FIT if level == FIT else level_name(multiple)
                    for seed in seeds:
                        trial = Trial(suite, e.cls.name, e.params, sparsity, int(seed), budget_policy, unit,
                                      float(multiple), (name,))
                        if e.source is not None:  # a control: the key of its source's trial in this cell
                            source = Trial(suite, e.source.cls.name, e.source.params, sparsity, int(seed),
                                           budget_policy, unit, float(multiple))
                            trial = dataclasses.replace(trial, source_key=source.key)
                        known = trials.get(trial.key)  # "0.5,0.50", "0,0" or fit = 2x: one experiment, run once
                        if known is not None and name not in known.budget_levels:
                            trials[trial.key] = dataclasses.replace(known, budget_levels=(*known.budget_levels, name))
                        elif known is None:
                            trials[trial.key] = trial
    return list(trials.values())


@dataclass
class _Entry:
    """A method of the plan with its resolved parameters and target sparsities; a control's source entry."""

    cls: type[Method]
    params: Any
    targets: list[float]
    overridden: bool
    source: _Entry | None = None


def _entries(suite: Suite, methods: Sequence[type[Method] | MethodSpec], sparsities: Sequence[float],
             params: dict[str, Any]) -> list[_Entry]:
    """The plan's methods, controls last and each linked to its source (the same method with the suite's
    parameters, which must be in the plan); a control runs at its source's target sparsities."""
    entries = []
    for entry in methods:
        spec = entry if isinstance(entry, MethodSpec) else MethodSpec(entry)
        p = (params.get(spec.cls.name) if not spec.overrides else None) or spec.params(suite)
        entries.append(_Entry(spec.cls, p, [float(s) for s in spec.cls.target_sparsities(p, sparsities)],
                              bool(spec.overrides)))
    plain = {e.cls.name: e for e in entries if not e.overridden}
    for e in entries:
        name = e.cls.source_of(e.params)
        if not name:
            continue
        label = f"{e.cls.name}[source={name}]"
        source = plain.get(name)
        if source is None:
            raise BenchError(f"{label}: its source '{name}' is not in the plan; add it to --methods "
                             f"(with the suite's parameters), e.g. {name},{label}")
        if source.cls.source_of(source.params) or not source.cls.prunes:
            what = "a control itself" if source.cls.source_of(source.params) else "a method that does not prune"
            raise BenchError(f"{label}: '{name}' is {what}; a source must be a pruning method, e.g. imp or snip")
        e.source, e.targets = source, list(source.targets)
    return sorted(entries, key=lambda e: e.source is not None)


def _multiples_at(level: float | str, sparsity: float, prunes: bool, fit: dict[float, float]) -> list[float]:
    """The multiples a method's trials at ``sparsity`` run at for one level: the level itself, the column's
    fit multiple, or (a method that does not prune, at ``fit``) every column's."""
    if level != FIT:
        return [float(level)]
    if not prunes:
        return sorted(set(fit.values())) or [1.0]
    return [fit[sparsity]]
