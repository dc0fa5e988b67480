"""Shared fixtures: tiny models and a Context over the synthetic smoke data, all on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_bench.core.budget import BudgetMeter
from pruning_bench.core.context import Context
from pruning_bench.core.recipe import Recipe
from pruning_bench.data import load_dataset

torch.set_num_threads(1)  # tiny models: threads only add overhead, and tests share 2 cores


class TinyNet(nn.Module):
    """conv(1->2, k3) -> relu -> linear(2*6 -> 3): 6 + 36 prunable weights, small enough to check by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def make_context(model: nn.Module | None = None, *, policy: str = "equal", epochs: float = 2.0,
                 sparsity: float = 0.5, seed: int = 0, recipe: Recipe | None = None, params=None,
                 checkpoint_dir=None, unit: str = "epochs", seconds: float | None = None,
                 min_round_epochs: float | None = None, checkpoint_seconds: float = 300.0) -> Context:
    """A Context over the smoke data set (512 samples, length 32, 4 classes)."""
    from pruning_bench.models import build_model

    data = load_dataset("smoke", seed=seed, val_fraction=0.125)
    torch.manual_seed(seed)
    model = model or build_model("smoke_cnn", num_classes=data.num_classes, input_shape=data.input_shape)
    recipe = recipe or Recipe(lr=0.05, batch_size=64, weight_decay=1e-4)
    meter = BudgetMeter(policy, epochs, data.n_train, unit=unit, seconds_limit=seconds)
    return Context(model=model, data=data, recipe=recipe, meter=meter, target_sparsity=sparsity,
                   params=params, seed=seed, device=torch.device("cpu"), checkpoint_dir=checkpoint_dir,
                   progress=False, min_round_epochs=min_round_epochs, checkpoint_seconds=checkpoint_seconds)


@pytest.fixture
def smoke_ctx() -> Context:
    return make_context()
