"""Tests for the data sets of pruning_bench.data: the loaders (CIFAR on tiny files in the real format,
MNIST-1D, digits, smoke), their validation splits, options and errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pruning_bench.data import BatchStream, DataBundle, available_datasets, iterate_batches, load_dataset
from pruning_bench.data import mnist1d as mnist1d_source
from pruning_bench.data.sources import clear_cache
from pruning_bench.errors import BenchError

CPU = torch.device("cpu")


def test_available_datasets() -> None:
    assert available_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "mnist", "mnist1d", "shakespeare", "smoke", "tiny_imagenet",
                                    "wikitext2"]


# ---------------------------------------------------------------- CIFAR, on tiny files in the real format


def _write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: str, bytes_keys: bool) -> None:
    batch = {"data": data, label_key: labels, "batch_label": "tiny"}
    if bytes_keys:  # what Python 2 pickles look like when read with encoding="bytes"
        batch = {k.encode(): v for k, v in batch.items()}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)


def _make_cifar10(root: Path, bytes_keys: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8)
    train_y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    test_x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    test_y = np.array([9, 0, 5])
    for i in range(5):
        part = slice(2 * i, 2 * i + 2)
        _write_batch(folder / f"data_batch_{i + 1}", train_x[part], train_y[part].tolist(), "labels", bytes_keys)
    _write_batch(folder / "test_batch", test_x, test_y.tolist(), "labels", bytes_keys)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return train_x, train_y, test_x, test_y


def test_cifar10_round_trip(tmp_path: Path) -> None:
    train_x, train_y, test_x, test_y = _make_cifar10(tmp_path)
    b = load_dataset("cifar10", seed=0, val_fraction=0.0, data_dir=str(tmp_path))
    assert b.train_x.dtype == torch.uint8 and b.train_x.shape == (10, 3, 32, 32)
    assert b.train_y.dtype == torch.int64 and b.train_y.tolist() == train_y.tolist()
    assert b.test_x.shape == (3, 3, 32, 32) and b.test_y.tolist() == test_y.tolist()
    assert b.val_x.shape == (0, 3, 32, 32) and b.val_y.shape == (0,)
    assert (b.num_classes, b.input_shape, b.augmentation) == (10, (3, 32, 32), "crop_flip")
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2470, 0.2435, 0.2616)
    # pixel (channel 2, row 5, column 7) of image 3 sits at 2*1024 + 5*32 + 7 in the flat row
    assert int(b.train_x[3, 2, 5, 7]) == int(train_x[3, 2 * 1024 + 5 * 32 + 7])
    assert torch.equal(b.train_x, torch.from_numpy(train_x).reshape(10, 3, 32, 32))
    assert torch.equal(b.test_x, torch.from_numpy(test_x).reshape(3, 3, 32, 32))


def test_cifar10_split_and_batches_dir_form(tmp_path: Path) -> None:
    _make_cifar10(tmp_path, bytes_keys=False)
    parent = load_dataset("cifar10", seed=3, val_fraction=0.2, data_dir=str(tmp_path))
    inner = load_dataset("cifar10", seed=3, val_fraction=0.2, data_dir=str(tmp_path / "cifar-10-batches-py"))
    assert (parent.n_train, parent.n_val, parent.n_test) == (8, 2, 3)
    assert torch.equal(parent.val_x, inner.val_x) and torch.equal(parent.train_y, inner.train_y)
    assert sorted(parent.train_y.tolist() + parent.val_y.tolist()) == list(range(10))


def test_cifar100_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    for name, data, labels in (("train", train_x, [0, 99, 5, 42, 7, 1]), ("test", test_x, [3, 98, 0])):
        batch = {b"data": data, b"fine_labels": labels, b"coarse_labels": [0] * len(labels)}
        (folder / name).write_bytes(pickle.dumps(batch))
    for data_dir in (tmp_path, folder):
        b = load_dataset("cifar100", seed=0, val_fraction=0.0, data_dir=str(data_dir))
        assert b.num_classes == 100 and b.train_x.shape == (6, 3, 32, 32)
        assert b.train_y.tolist() == [0, 99, 5, 42, 7, 1] and b.test_y.tolist() == [3, 98, 0]
        assert int(b.test_x[1, 0, 31, 31]) == int(test_x[1, 1023])
        assert b.mean == (0.5071, 0.4865, 0.4409)
    assert load_dataset("cifar100", seed=0, val_fraction=0.5, data_dir=str(tmp_path)).n_val == 3


def test_cifar_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(BenchError, match="CIFAR-10 not found") as err:
        load_dataset("cifar10", seed=0, data_dir=str(missing), download=False)
    assert str(missing / "cifar-10-batches-py") in str(err.value)
    assert "data_batch_1..5" in str(err.value) and "--data-dir" in str(err.value)
    monkeypatch.setenv("PRUNING_BENCH_DATA", str(tmp_path / "cache"))  # no data_dir: the data cache
    with pytest.raises(BenchError, match="CIFAR-100 not found") as err:
        load_dataset("cifar100", seed=0, download=False)
    assert str(tmp_path / "cache" / "cifar-100-python") in str(err.value)
    _make_cifar10(tmp_path / "partial")
    (tmp_path / "partial" / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(BenchError, match=r"missing: test_batch"):  # never downloaded over
        load_dataset("cifar10", seed=0, data_dir=str(tmp_path / "partial"))


def test_cifar_corrupt_pickle(tmp_path: Path) -> None:
    _make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"this is not a pickle\n")
    with pytest.raises(BenchError, match="data_batch_3") as err:
        load_dataset("cifar10", seed=0, data_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    _write_batch(tmp_path / "cifar-10-batches-py" / "data_batch_3", np.zeros((2, 100), np.uint8), [0, 1], "labels", True)
    with pytest.raises(BenchError, match=r"data_batch_3.*expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", seed=0, data_dir=str(tmp_path))


# ---------------------------------------------------------------- MNIST-1D


@pytest.fixture(scope="module")
def mnist1d_options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"cache_dir": str(tmp_path_factory.mktemp("mnist1d_cache"))}


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_mnist1d_args_match_package_defaults() -> None:
    from mnist1d.data import get_dataset_args

    defaults = get_dataset_args(as_dict=True)
    defaults.pop("url")
    assert defaults == mnist1d_source.MNIST1D_ARGS


def test_mnist1d_generation_keeps_global_rng_and_disk_cache(mnist1d_options: dict[str, str]) -> None:
    clear_cache()
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    first = load_dataset("mnist1d", seed=0, val_fraction=0.0, options=mnist1d_options)
    assert np.random.rand() == expected  # make_dataset reseeds np.random globally; the loader restores it
    assert len(list(Path(mnist1d_options["cache_dir"]).glob("mnist1d-*.npz"))) == 1
    clear_cache()
    again = load_dataset("mnist1d", seed=0, val_fraction=0.0, options=mnist1d_options)  # from disk
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)


def test_mnist1d_shapes_and_split(mnist1d_options: dict[str, str]) -> None:
    full = load_dataset("mnist1d", seed=0, val_fraction=0.0, options=mnist1d_options)
    assert (full.n_train, full.n_val, full.n_test) == (4000, 0, 1000)
    assert full.train_x.dtype == torch.float32 and full.input_shape == (1, 40)
    assert full.num_classes == 10 and set(full.train_y.tolist()) == set(range(10))
    assert abs(float(full.train_x.mean())) < 0.05 and abs(float(full.train_x.std()) - 1) < 0.05
    assert (full.mean, full.std, full.augmentation) == ((0.0,), (1.0,), "none")

    a = load_dataset("mnist1d", seed=1, val_fraction=0.1, options=mnist1d_options)
    a2 = load_dataset("mnist1d", seed=1, val_fraction=0.1, options=mnist1d_options)
    b = load_dataset("mnist1d", seed=2, val_fraction=0.1, options=mnist1d_options)
    assert (a.n_train, a.n_val, a.n_test) == (3600, 400, 1000)
    assert torch.equal(a.val_x, a2.val_x) and torch.equal(a.train_y, a2.train_y)
    assert not torch.equal(a.val_x, b.val_x)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_x, full.test_x)
    train_rows, val_rows = _rows(a.train_x), _rows(a.val_x)
    assert len(train_rows) == 3600 and len(val_rows) == 400 and not train_rows & val_rows
    assert train_rows | val_rows == _rows(full.train_x)


# ---------------------------------------------------------------- digits, smoke, names and options


def test_digits() -> None:
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=1)
    assert a.n_test == 360 and a.n_train + a.n_val == 1797 - 360 and a.n_val == 144
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.float32
    assert float(a.train_x.min()) == 0.0 and float(a.train_x.max()) == 1.0
    assert torch.equal(a.test_x, b.test_x)  # the test split does not depend on the trial seed
    assert torch.bincount(a.test_y, minlength=10).min() >= 35  # stratified
    assert 0.2 < a.mean[0] < 0.4 and 0.3 < a.std[0] < 0.5


def test_smoke_options_and_errors() -> None:
    b = load_dataset("smoke", seed=0, val_fraction=0.25,
                     options={"n_train": 100, "n_test": 40, "length": 16, "num_classes": 3})
    assert (b.n_train, b.n_val, b.n_test, b.input_shape, b.num_classes) == (75, 25, 40, (1, 16), 3)
    assert set(b.test_y.tolist()) == {0, 1, 2} and b.train_x.dtype == torch.float32
    default = load_dataset("smoke", seed=5)
    assert (default.n_train + default.n_val, default.n_test, default.input_shape) == (512, 256, (1, 32))
    assert torch.equal(default.test_x, load_dataset("smoke", seed=6).test_x)
    quiet = load_dataset("smoke", seed=0, val_fraction=0.0, options={"noise": 0.0})
    assert len(_rows(quiet.train_x)) == 4  # noise 0: every sample is its class template

    with pytest.raises(BenchError, match="n_trian") as err:
        load_dataset("smoke", seed=0, options={"n_trian": 10})
    assert "n_train" in str(err.value)
    with pytest.raises(BenchError, match="num_classes"):
        load_dataset("smoke", seed=0, options={"num_classes": 1})
    with pytest.raises(BenchError, match="cache_dir"):
        load_dataset("digits", seed=0, options={"cache_dir": "/tmp"})
    with pytest.raises(BenchError, match="Did you mean 'mnist1d'"):
        load_dataset("mnist1", seed=0)
    with pytest.raises(BenchError, match="val_fraction"):
        load_dataset("smoke", seed=0, val_fraction=1.0)


def test_smoke_is_learnable() -> None:
    torch.manual_seed(0)
    b = load_dataset("smoke", seed=0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(1, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 32, 4)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    stream = BatchStream(b.train_x, b.train_y, batch_size=32, data_seed=0, augmentation=b.augmentation,
                         mean=b.mean, std=b.std, device=CPU)
    for step in range(3 * stream.steps_per_epoch):
        x, y = stream.batch(step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in iterate_batches(
            b.test_x, b.test_y, batch_size=100, mean=b.mean, std=b.std, device=CPU))
    assert correct / b.n_test > 0.8


def test_bundle_is_a_dataclass_with_counts() -> None:
    b = load_dataset("smoke", seed=0, options={"n_train": 20})
    assert isinstance(b, DataBundle) and b.n_train == len(b.train_x) == 18 and b.val_x.shape == (2, 1, 32)
