"""Fresh models of a trial's architecture, for methods that start again from a new initialisation (the
``reinit`` and ``scratch`` controls). The runner builds one from the suite's model; methods never import
the model registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelFactory:
    """``build()`` returns a freshly initialised model of the suite (from the global RNG);
    ``initialize(model)`` draws every weight of a model (e.g. a shrunk copy) afresh by the same scheme."""

    build: Callable[[], nn.Module]
    initialize: Callable[[nn.Module], None]

    def fresh(self, seed: int) -> nn.Module:
        """A freshly initialised model drawn from ``seed``, leaving the global RNG as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build()

    def reinitialized(self, model: nn.Module, seed: int) -> nn.Module:
        """``model`` with every parameter drawn afresh from ``seed`` (in place; returned for chaining)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.initialize(model)
        return model
