"""Data sets (MNIST-1D, digits, CIFAR-10/100, a synthetic smoke set) and deterministic batching."""

from __future__ import annotations

from pruning_bench.data.batches import BatchStream, iterate_batches
from pruning_bench.data.bundle import DataBundle
from pruning_bench.data.sources import available_datasets, load_dataset

__all__ = ["BatchStream", "DataBundle", "available_datasets", "iterate_batches", "load_dataset"]
