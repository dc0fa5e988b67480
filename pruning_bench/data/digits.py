"""scikit-learn's bundled 8x8 handwritten digits (1,797 images), with a fixed stratified test split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pruning_bench.data.bundle import RawDataset

N_TEST = 360
OPTIONS: dict[str, Any] = {}


def load_digits_source(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """1,437 train / 360 test float32 images (1, 8, 8) in [0, 1]; the test split is fixed (seed 0)."""
    del data_dir, download, options  # bundled with scikit-learn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=N_TEST, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    train_x = x[train_idx]
    return RawDataset(
        train_x=train_x,
        train_y=y[train_idx],
        test_x=x[test_idx],
        test_y=y[test_idx],
        num_classes=10,
        mean=(float(train_x.mean()),),
        std=(float(train_x.std()),),
        augmentation="none",
    )
