"""MNIST-1D, generated offline from the `mnist1d` package's templates with its default arguments.

The training set and the first 1,000 test signals are the package's own (``make_dataset`` with its default
arguments). The option ``extra_test`` appends that many further test signals drawn from the same templates
and transforms with another seed (:data:`EXTRA_TEST_SEED`) and standardised with the original set's
constants, so the training set, and with it the regime, stays the same while the test accuracy is measured
more precisely: on 1,000 signals one model's accuracy near 95% has a sampling error of about 0.7 points,
on 10,000 about 0.2 (docs/statistics.md).

Generating takes about 1.5 s (0.7 s to import the package, which pulls in matplotlib, plus 0.7 s for
`make_dataset`) and about 1.4 s more per 10,000 extra test signals, so the arrays are cached on disk,
keyed on the arguments and the package version.
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
from pruning_bench.errors import BenchError

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
OPTIONS: dict[str, Any] = {"cache_dir": None, "extra_test": 0}
EXTRA_TEST_SEED = 43  # the package's seed is 42; any other seed draws new signals from the same templates
MAX_EXTRA_TEST = 1_000_000


def default_cache_dir() -> Path:
    """The per-user data cache (pruning_bench.data.download.data_home)."""
    return data_home()


def _cache_path(cache_dir: Path, extra_test: int = 0) -> Path:
    try:
        version = metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        version = "unknown"
    fields: dict[str, Any] = {"args": MNIST1D_ARGS, "mnist1d": version}
    if extra_test:  # keyed only when used, so the default set's cache file keeps its name
        fields["extra_test"] = [extra_test, EXTRA_TEST_SEED]
    key = json.dumps(fields, sort_keys=True)
    return cache_dir / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def raw_signals(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_dataset``'s signals before it standardises them: the same per-class transforms of the
    templates, in the same order, then the same shuffle (so ``raw_signals(5000, 42)``, standardised,
    is the package's data set exactly; a test checks it). The global RNGs are restored afterwards."""
    from mnist1d.data import get_templates
    from mnist1d.transform import transform

    args = SimpleNamespace(**{**MNIST1D_ARGS, "num_samples": num_samples, "seed": seed})
    templates = get_templates()
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed)
        xs, ys = [], []
        for label in range(len(templates["y"])):
            for _ in range(num_samples // len(templates["y"])):
                x, _t = transform(templates["x"][label], templates["t"], args)
                xs.append(x)
                ys.append(templates["y"][label])
        order = np.random.permutation(len(ys))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return np.stack(xs)[order], np.stack(ys)[order]


def _generate(extra_test: int = 0) -> dict[str, np.ndarray]:
    """The package's data set, plus ``extra_test`` test signals from another seed, standardised with the
    package set's own mean and std (computed over all 5,000 signals, as ``make_dataset`` does)."""
    xs, ys = raw_signals(MNIST1D_ARGS["num_samples"], MNIST1D_ARGS["seed"])
    mean, std = xs.mean(), xs.std()
    split = int(len(ys) * MNIST1D_ARGS["train_split"])
    x = (xs - mean) / std
    arrays = {"x": x[:split], "y": ys[:split], "x_test": x[split:], "y_test": ys[split:]}
    if extra_test:
        more_x, more_y = raw_signals(extra_test, EXTRA_TEST_SEED)
        arrays["x_test"] = np.concatenate([arrays["x_test"], (more_x - mean) / std])
        arrays["y_test"] = np.concatenate([arrays["y_test"], more_y])
    return arrays


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
    """4,000 train / 1,000 (+ ``extra_test``) test float32 signals of shape (1, 40), 10 classes, already
    standardised."""
    del data_dir, download  # generated, nothing to read or fetch
    extra = options.get("extra_test", 0)
    if not isinstance(extra, int) or isinstance(extra, bool) or not 0 <= extra <= MAX_EXTRA_TEST \
            or extra % 10:
        raise BenchError(f"mnist1d option extra_test={extra!r} must be a multiple of 10 (one signal per class "
                         f"each) from 0 to {MAX_EXTRA_TEST:,}, e.g. 9000")
    cache_dir = Path(options["cache_dir"]).expanduser() if options["cache_dir"] else default_cache_dir()
    path = _cache_path(cache_dir, extra)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate(extra)
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
