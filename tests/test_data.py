"""Tests for pruning_bench.data: loaders, validation split, batch streams and augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pruning_bench.data import BatchStream, DataBundle, available_datasets, iterate_batches, load_dataset
from pruning_bench.data import mnist1d as mnist1d_source
from pruning_bench.data.augment import apply_augmentation, random_crop_flip
from pruning_bench.data.sources import clear_cache
from pruning_bench.errors import BenchError

CPU = torch.device("cpu")


def test_available_datasets() -> None:
    assert available_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "mnist1d", "smoke", "tiny_imagenet"]


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


# ---------------------------------------------------------------- BatchStream and iterate_batches


def _indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples whose value is their index, so a batch reveals which samples it holds."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1).expand(n, 1, 3).clone()
    return x, torch.arange(n)


def _stream(x: torch.Tensor, y: torch.Tensor, seed: int = 0, bs: int = 8, **kw: object) -> BatchStream:
    kw = {"augmentation": "none", "mean": (0.0,), "std": (1.0,), **kw}
    return BatchStream(x, y, batch_size=bs, data_seed=seed, device=CPU, **kw)  # type: ignore[arg-type]


def test_stream_same_seed_and_step_same_batch() -> None:
    x, y = _indexed(50)
    s1, s2 = _stream(x, y), _stream(x, y)
    for step in (0, 13, 7):  # s2 visits other epochs first: its cached permutation must not matter
        s2.batch(step)
    for step in (20, 3, 6, 30):
        a, b = s1.batch(step), s2.batch(step)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(s1.batch(0)[1], s1.batch(s1.steps_per_epoch)[1])  # epochs reshuffle
    assert not torch.equal(s1.batch(0)[1], _stream(x, y, seed=1).batch(0)[1])


def test_stream_covers_each_sample_once_per_epoch() -> None:
    x, y = _indexed(50)
    s = _stream(x, y, seed=4, bs=8)
    assert s.steps_per_epoch == 7
    for epoch in (0, 1, 5):
        batches = [s.batch(epoch * 7 + p) for p in range(7)]
        assert [len(b[1]) for b in batches] == [8] * 6 + [2]
        labels = torch.cat([b[1] for b in batches])
        assert sorted(labels.tolist()) == list(range(50)) and labels.tolist() != list(range(50))
        xs = torch.cat([b[0] for b in batches])
        assert torch.equal(xs[:, 0, 0], labels.float())  # inputs stay paired with their labels


def test_stream_normalisation_and_layout() -> None:
    mean, std = (0.2, 0.5, 0.8), (0.1, 0.2, 0.4)
    img = torch.tensor([51, 128, 204], dtype=torch.uint8).view(1, 3, 1, 1).expand(10, 3, 4, 4).clone()
    s = _stream(img, torch.zeros(10, dtype=torch.long), mean=mean, std=std, channels_last=True)
    assert s.x.dtype == torch.uint8  # kept compact on the device
    xb, _ = s.batch(0)
    assert xb.dtype == torch.float32 and xb.is_contiguous(memory_format=torch.channels_last)
    want = [(v / 255 - m) / sd for v, m, sd in zip((51, 128, 204), mean, std, strict=True)]
    assert torch.allclose(xb[0, :, 0, 0], torch.tensor(want), atol=1e-6)

    at_mean = torch.tensor(mean).view(1, 3, 1, 1).expand(10, 3, 4, 4).clone()
    xb, _ = _stream(at_mean, torch.zeros(10, dtype=torch.long), mean=mean, std=std).batch(0)
    assert float(xb.abs().max()) < 1e-6
    signal = torch.full((10, 1, 6), 3.0)
    xb, _ = _stream(signal, torch.zeros(10, dtype=torch.long), mean=(1.0,), std=(2.0,)).batch(0)
    assert torch.allclose(xb, torch.ones_like(xb))
    assert float(signal.max()) == 3.0  # the stored data is not modified


def test_stream_augmentation_is_reproducible() -> None:
    img = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(40)
    s1, s2 = (_stream(img, y, augmentation="crop_flip", mean=(0.5,) * 3, std=(0.25,) * 3) for _ in range(2))
    s2.batch(11)
    assert torch.equal(s1.batch(2)[0], s2.batch(2)[0])
    plain = _stream(img, y, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert torch.equal(s1.batch(2)[1], plain.batch(2)[1])  # augmentation does not change the order
    assert not torch.equal(s1.batch(2)[0], plain.batch(2)[0])
    with pytest.raises(BenchError, match="augmentation"):
        _stream(img, y, augmentation="mixup")


def test_iterate_batches_in_order() -> None:
    x, y = _indexed(23)
    out = list(iterate_batches(x, y, batch_size=10, mean=(1.0,), std=(2.0,), device=CPU))
    assert [len(b[1]) for b in out] == [10, 10, 3]
    assert torch.cat([b[1] for b in out]).tolist() == list(range(23))
    assert torch.allclose(torch.cat([b[0] for b in out]), (x - 1) / 2)
    img = torch.full((5, 3, 4, 4), 255, dtype=torch.uint8)
    (xb, _), = iterate_batches(img, torch.zeros(5), batch_size=8, mean=(0.5,), std=(0.5,), device=CPU,
                               channels_last=True)
    assert torch.allclose(xb, torch.ones_like(xb)) and xb.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- augmentation


def _match_window(out: torch.Tensor, padded: torch.Tensor, h: int, w: int) -> tuple[int, int, bool] | None:
    for dy in range(padded.shape[-2] - h + 1):
        for dx in range(padded.shape[-1] - w + 1):
            window = padded[:, dy : dy + h, dx : dx + w]
            for flip in (False, True):
                if torch.equal(out, window.flip(-1) if flip else window):
                    return dy, dx, flip
    return None


def test_crop_is_a_shifted_window_of_the_padded_input() -> None:
    x = torch.rand(64, 2, 6, 5) + 1.0  # non-zero, so padding is told apart from data
    p = 2
    out = random_crop_flip(x, padding=p, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (p, p, p, p))
    found = [_match_window(out[i], padded[i], 6, 5) for i in range(64)]
    assert all(f is not None for f in found)
    assert len({f[:2] for f in found if f}) > 8  # offsets vary per sample
    assert {f[2] for f in found if f} == {False, True}


def test_flip_rate_and_determinism() -> None:
    x = torch.rand(4000, 1, 3, 4)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same ^ flipped).all())
    assert 0.45 < float(flipped.float().mean()) < 0.55

    img = torch.rand(16, 3, 8, 8)
    a = random_crop_flip(img, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(img, generator=torch.Generator().manual_seed(5))
    c = random_crop_flip(img, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert apply_augmentation("none", img) is img
    assert torch.equal(apply_augmentation("crop_flip", img, torch.Generator().manual_seed(5)), a)
    with pytest.raises(BenchError, match="Did you mean 'crop_flip'"):
        apply_augmentation("crop_flp", img)
