"""Trials and the plan: the grid method x sparsity x seed, each trial with a stable key.

A trial's key is a hash of its canonical configuration (suite's experiment config, method name and
resolved parameters, target sparsity, seed, budget policy) plus :data:`pruning_bench.RESULT_VERSION`.
The same key means the same experiment, so a finished key is never run twice unless asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
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

    def config(self) -> dict[str, Any]:
        """The canonical, JSON-able description hashed into the key."""
        return {
            "suite": self.suite.experiment_config(),
            "method": self.method,
            "params": dataclasses.asdict(self.params),
            "target_sparsity": round(self.target_sparsity, 6),
            "seed": self.seed,
            "budget_policy": self.budget_policy,
            "result_version": RESULT_VERSION,
        }

    @property
    def key(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.method} s={self.target_sparsity:g} seed={self.seed}"


def build_plan(suite: Suite, methods: Sequence[type[Method]], sparsities: Sequence[float],
               seeds: Sequence[int], budget_policy: str,
               params: dict[str, Any] | None = None) -> list[Trial]:
    """Every (method, sparsity, seed) trial, in a stable order. A method that does not prune (the dense
    baseline) gets one trial per seed at sparsity 0."""
    params = params or {}
    trials: list[Trial] = []
    for cls in methods:
        p = params.get(cls.name) or cls.parse_params(suite.method_params.get(cls.name, {}),
                                                     where=f"{suite.source}: ")
        for sparsity in (sparsities if cls.prunes else [0.0]):
            for seed in seeds:
                trials.append(Trial(suite, cls.name, p, float(sparsity), int(seed), budget_policy))
    return list({t.key: t for t in trials}.values())  # "0.5,0.50" or "0,0" is one experiment, run once
