"""CIFAR-10 / CIFAR-100 read from the official "python version" pickles, downloaded into the data cache.

The archive's URL and MD5 can be replaced (a mirror, a test server) by the ``url`` / ``md5`` parameters of
:func:`load_cifar` or the environment variables ``PRUNING_BENCH_CIFAR10_URL`` / ``PRUNING_BENCH_CIFAR10_MD5``
(``CIFAR100`` likewise).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.data.download import Archive, data_home, fetch, one_line, source_override
from pruning_bench.errors import BenchError

OPTIONS: dict[str, Any] = {}


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
    url: str  # the published archive (torchvision's URL and MD5)
    md5: str


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
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
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
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def archive(name: str, url: str | None = None, md5: str | None = None) -> Archive:
    """The archive of data set ``name``: ``url`` / ``md5``, else $PRUNING_BENCH_<NAME>_URL / _MD5, else the
    published ones."""
    spec = SPECS[name]
    return Archive(title=spec.title, url=source_override(name, "url", spec.url, url),
                   md5=source_override(name, "md5", spec.md5, md5), folder=spec.folder,
                   files=spec.train_files + spec.test_files, expected=spec.expected)


def _find_dir(spec: CifarSpec, data_dir: Path) -> Path | None:
    """The batches directory: `data_dir/<folder>` or `data_dir` itself, whichever holds every file."""
    for candidate in (data_dir / spec.folder, data_dir):
        if all((candidate / f).is_file() for f in spec.train_files + spec.test_files):
            return candidate
    return None


def _expected_dir(spec: CifarSpec, data_dir: Path) -> Path:
    return data_dir if data_dir.name == spec.folder else data_dir / spec.folder


def _obtain(spec: CifarSpec, data_dir: Path, download: bool, source: Archive) -> Path:
    """Download the data set into ``data_dir`` when allowed; a partial copy there is never overwritten."""
    folder = _expected_dir(spec, data_dir)
    absent = [f for f in spec.train_files + spec.test_files if not (folder / f).is_file()]
    if folder.is_dir() and any(folder.iterdir()):
        raise BenchError(f"{spec.title} in {folder}/ is incomplete (missing: {', '.join(absent)}): delete that "
                         f"directory to download it again, or copy the files from {source.url} (the 'python "
                         "version')")
    if not download:
        raise BenchError(f"{spec.title} not found: expected {folder}/{spec.expected} and downloading is off "
                         f"(--no-download, or download = false in the suite): fetch {source.url} by hand "
                         f"(md5 {source.md5}) and extract it into {folder.parent}, or pass --data-dir DIR")
    return fetch(source, folder.parent)


def _read_file(spec: CifarSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one pickle; any problem names the file."""
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except Exception as exc:
        raise BenchError(f"cannot read {spec.title} file {path}: {one_line(exc)}") from exc
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


def load_cifar(name: str, data_dir: str | None, download: bool = True, *, url: str | None = None,
               md5: str | None = None) -> RawDataset:
    """Official train (50,000) and test (10,000) sets as uint8 (N, 3, 32, 32); augmentation crop_flip.

    Read from ``data_dir`` (default: the data cache, :func:`pruning_bench.data.download.data_home`), which
    may be the folder the archive unpacks to or its parent; when the files are missing and ``download``
    is true, the archive (``url``/``md5``, see :func:`archive`) is fetched there first.
    """
    spec = SPECS[name]
    root = data_home(data_dir)
    folder = _find_dir(spec, root) or _obtain(spec, root, download, archive(name, url, md5))
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
