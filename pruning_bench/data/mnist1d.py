"""MNIST-1D, generated offline from the `mnist1d` package's templates with its default arguments.

Generating takes about 1.5 s (0.7 s to import the package, which pulls in matplotlib, plus 0.7 s for
`make_dataset`), so the arrays are cached on disk, keyed on the arguments and the package version.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.data.download import data_home

# mnist1d.data.get_dataset_args() without 'url' (checked by a test), copied so that a cache hit does not
# have to import the package.
MNIST1D_ARGS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}
OPTIONS: dict[str, Any] = {"cache_dir": None}


def default_cache_dir() -> Path:
    """The per-user data cache (pruning_bench.data.download.data_home)."""
    return data_home()


def _cache_path(cache_dir: Path) -> Path:
    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        version = "unknown"
    key = json.dumps({"args": MNIST1D_ARGS, "mnist1d": version}, sort_keys=True)
    return cache_dir / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset

    # make_dataset reseeds the global `random` and `np.random` generators: restore them afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(SimpleNamespace(**MNIST1D_ARGS))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in ("x", "y", "x_test", "y_test")}
    except Exception:  # a corrupt or partial file: regenerate and overwrite it
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
            tmp_name = fh.name
            np.savez(fh, **arrays)
        os.chmod(tmp_name, 0o644)  # NamedTemporaryFile creates 0600
        os.replace(tmp_name, path)
    except OSError as exc:
        warnings.warn(f"could not cache MNIST-1D at {path}: {exc}", stacklevel=3)
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def load_mnist1d(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """4,000 train / 1,000 test float32 signals of shape (1, 40), 10 classes, already standardised."""
    del data_dir, download  # generated, nothing to read or fetch
    cache_dir = Path(options["cache_dir"]).expanduser() if options["cache_dir"] else default_cache_dir()
    path = _cache_path(cache_dir)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate()
        _write_cache(path, arrays)

    def signals(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    # make_dataset centres the whole set and scales it to unit std (train: mean -0.0003, std 0.998).
    return RawDataset(
        train_x=signals(arrays["x"]),
        train_y=labels(arrays["y"]),
        test_x=signals(arrays["x_test"]),
        test_y=labels(arrays["y_test"]),
        num_classes=10,
        mean=(0.0,),
        std=(1.0,),
        augmentation="none",
    )
