"""The name -> loader registry, `load_dataset`, and the in-process cache of raw data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pruning_bench.data import cifar, digits, mnist1d, synthetic
from pruning_bench.data.bundle import DataBundle, RawDataset, resolve_options, split_train_val
from pruning_bench.data.download import data_home
from pruning_bench.errors import unknown_choice

Loader = Callable[[str | None, bool, dict[str, Any]], RawDataset]


@dataclass(frozen=True)
class Source:
    loader: Loader
    options: Mapping[str, Any]  # the valid option keys and their defaults
    cached: bool = False  # files under data_dir, by default the per-user data cache (data.download.data_home)


SOURCES: dict[str, Source] = {
    "cifar10": Source(cifar.load_cifar10, cifar.OPTIONS, cached=True),
    "cifar100": Source(cifar.load_cifar100, cifar.OPTIONS, cached=True),
    "digits": Source(digits.load_digits_source, digits.OPTIONS),
    "mnist1d": Source(mnist1d.load_mnist1d, mnist1d.OPTIONS),
    "smoke": Source(synthetic.load_smoke, synthetic.OPTIONS),
}

_CACHE: dict[tuple[Any, ...], RawDataset] = {}


def available_datasets() -> list[str]:
    return sorted(SOURCES)


def clear_cache() -> None:
    """Forget the raw data loaded so far in this process."""
    _CACHE.clear()


def load_dataset(
    name: str,
    *,
    seed: int,
    val_fraction: float = 0.1,
    data_dir: str | None = None,
    download: bool = True,
    options: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load data set `name`, holding out `val_fraction` of its training set as chosen by `seed`.

    Files are read from `data_dir` (default: the per-user data cache) and downloaded there first when
    missing, unless `download` is false."""
    if name not in SOURCES:
        raise unknown_choice("dataset", name, available_datasets())
    source = SOURCES[name]
    resolved = resolve_options(name, options, source.options)
    if source.cached:  # resolved before keying the in-process cache, which then follows $PRUNING_BENCH_DATA
        data_dir = str(data_home(data_dir))
    data_dir = str(data_dir) if data_dir is not None else None
    key = (name, data_dir, tuple(sorted((k, repr(v)) for k, v in resolved.items())))
    raw = _CACHE.get(key)
    if raw is None:
        raw = source.loader(data_dir, download, resolved)
        _CACHE[key] = raw
    train_x, train_y, val_x, val_y = split_train_val(
        raw.train_x, raw.train_y, val_fraction=val_fraction, seed=seed
    )
    return DataBundle(
        name=name,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=raw.test_x.clone(),
        test_y=raw.test_y.clone(),
        num_classes=raw.num_classes,
        input_shape=tuple(raw.train_x.shape[1:]),
        mean=raw.mean,
        std=raw.std,
        augmentation=raw.augmentation,
    )
