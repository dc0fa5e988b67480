"""The loaded data set (`DataBundle`), the raw form sources return, and the validation split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pruning_bench.errors import BenchError, unknown_choice


@dataclass
class RawDataset:
    """What a source loader returns: the official train and test sets, before any validation split.

    A source with a fixed validation split of its own (e.g. whole plays) gives ``val_x``/``val_y``; then
    ``val_fraction`` is not used. ``tokens``: inputs are int64 token ids (no normalisation, no
    augmentation; outputs may be per-token logits (B, T, V)). ``fingerprint``: a hash of the exact data,
    recorded with every trial."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    tokens: bool = False
    fingerprint: str = ""


@dataclass
class DataBundle:
    """One data set ready for a trial: CPU tensors, uint8 images or float32 signals, int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str
    tokens: bool = False  # inputs are int64 token ids (see RawDataset)
    fingerprint: str = ""  # a hash of the exact data, logged as the tag data_fingerprint

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype of a model input (for probes of shape ``input_shape``): int64 ids or float32."""
        return torch.int64 if self.tokens else torch.float32

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.val_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, *, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out round(val_fraction * N) samples chosen by a permutation seeded with `seed`.

    Returns (train_x, train_y, val_x, val_y); both parts keep the original sample order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise BenchError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = int(y.shape[0])
    n_val = int(round(n * val_fraction))
    if n_val >= n:
        raise BenchError(f"val_fraction {val_fraction} leaves no training samples out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = perm[:n_val].sort().values
    train_idx = perm[n_val:].sort().values
    if hasattr(x, "subset"):  # a lazy image set (data.imagefolder.ImageFiles): views, nothing decoded
        return x.subset(train_idx), y[train_idx], x.subset(val_idx), y[val_idx]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def resolve_options(
    dataset: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge `given` over a source's defaults; an unknown key is a BenchError naming the valid ones."""
    given = dict(given or {})
    for key in given:
        if key not in defaults:
            raise unknown_choice(f"option for dataset '{dataset}':", str(key), defaults)
    return {**defaults, **given}
