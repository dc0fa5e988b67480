"""`smoke`: a tiny synthetic signal data set for tests (one fixed random template per class plus noise)."""

from __future__ import annotations

from typing import Any

import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.errors import BenchError

OPTIONS: dict[str, Any] = {"n_train": 512, "n_test": 256, "length": 32, "num_classes": 4, "noise": 0.5}
_MINIMUM = {"n_train": 1, "n_test": 1, "length": 1, "num_classes": 2}
TEMPLATE_SEED = 1234
_TRAIN_SEED, _TEST_SEED = 1235, 1236


def _check(options: dict[str, Any]) -> None:
    for key, low in _MINIMUM.items():
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BenchError(f"smoke option '{key}' must be an integer >= {low}, got {value!r}")
    noise = options["noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise BenchError(f"smoke option 'noise' must be a number >= 0, got {noise!r}")


def _samples(templates: torch.Tensor, n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    num_classes = templates.shape[0]
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    x = templates[y] + noise * torch.randn((n, *templates.shape[1:]), generator=gen)
    return x.float(), y.long()


def load_smoke(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """float32 (N, 1, length) signals, balanced classes; fixed regardless of the trial seed."""
    del data_dir, download
    _check(options)
    templates = torch.randn(
        (options["num_classes"], 1, options["length"]), generator=torch.Generator().manual_seed(TEMPLATE_SEED)
    )
    train_x, train_y = _samples(templates, options["n_train"], float(options["noise"]), _TRAIN_SEED)
    test_x, test_y = _samples(templates, options["n_test"], float(options["noise"]), _TEST_SEED)
    return RawDataset(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=options["num_classes"],
        mean=(0.0,),
        std=(1.0,),
        augmentation="none",
    )
