"""CIFAR-10 / CIFAR-100 read from the official "python version" pickles on disk."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.errors import BenchError

OPTIONS: dict[str, Any] = {}
_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarSpec:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    expected: str  # the files, in words, for error messages
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: str


SPECS = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        expected="data_batch_1..5 and test_batch",
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        expected="train and test",
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        torchvision_class="CIFAR100",
    ),
}


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _find_dir(spec: CifarSpec, data_dir: Path) -> Path | None:
    """The batches directory: `data_dir/<folder>` or `data_dir` itself, whichever holds every file."""
    for candidate in (data_dir / spec.folder, data_dir):
        if all((candidate / f).is_file() for f in spec.train_files + spec.test_files):
            return candidate
    return None


def _expected_dir(spec: CifarSpec, data_dir: Path) -> Path:
    return data_dir if data_dir.name == spec.folder else data_dir / spec.folder


def _not_found(spec: CifarSpec, data_dir: Path | None) -> BenchError:
    where = f"{_expected_dir(spec, data_dir)}/" if data_dir is not None else f"DIR/{spec.folder}/"
    missing = ""
    if data_dir is not None:
        folder = _expected_dir(spec, data_dir)
        absent = [f for f in spec.train_files + spec.test_files if not (folder / f).is_file()]
        if folder.is_dir() and absent:
            missing = f" (missing: {', '.join(absent)})"
    given = "" if data_dir is not None else " (no data directory given)"
    return BenchError(
        f"{spec.title} not found{given}: expected {where}{spec.expected}{missing} "
        f"(the 'python version' from {_URL}); pass --data-dir DIR or set data_dir in the suite, "
        "or --download where the network allows"
    )


def _download(spec: CifarSpec, data_dir: Path) -> None:
    root = data_dir.parent if data_dir.name == spec.folder else data_dir
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, spec.torchvision_class)
        cls(root=str(root), train=True, download=True)
        cls(root=str(root), train=False, download=True)
    except Exception as exc:
        raise BenchError(f"downloading {spec.title} into {root} failed: {_one_line(exc)}") from exc


def _read_file(spec: CifarSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one pickle; any problem names the file."""
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except Exception as exc:
        raise BenchError(f"cannot read {spec.title} file {path}: {_one_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise BenchError(f"{spec.title} file {path} is not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    for key in ("data", spec.label_key):
        if key not in obj:
            raise BenchError(f"{spec.title} file {path} has no '{key}' entry (keys: {sorted(obj)})")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj[spec.label_key], dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise BenchError(f"{spec.title} file {path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if len(labels) != len(data):
        raise BenchError(f"{spec.title} file {path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise BenchError(f"{spec.title} file {path}: labels outside 0..{spec.num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_split(spec: CifarSpec, folder: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_file(spec, folder / f) for f in files]
    x = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y)


def load_cifar(name: str, data_dir: str | None, download: bool) -> RawDataset:
    """Official train (50,000) and test (10,000) sets as uint8 (N, 3, 32, 32); augmentation crop_flip."""
    spec = SPECS[name]
    root = Path(data_dir).expanduser() if data_dir else None
    folder = _find_dir(spec, root) if root is not None else None
    if folder is None and download:
        if root is None:
            raise BenchError(f"--download of {spec.title} needs a directory to save into: pass --data-dir DIR")
        _download(spec, root)
        folder = _find_dir(spec, root)
    if folder is None:
        raise _not_found(spec, root)
    train_x, train_y = _read_split(spec, folder, spec.train_files)
    test_x, test_y = _read_split(spec, folder, spec.test_files)
    return RawDataset(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        augmentation="crop_flip",
    )


def load_cifar10(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    return load_cifar("cifar10", data_dir, download)


def load_cifar100(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    return load_cifar("cifar100", data_dir, download)
