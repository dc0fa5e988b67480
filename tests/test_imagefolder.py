"""Data beyond memory: `imagefolder` and `tiny_imagenet` read images from disk per batch (ImageFiles), with
the same step-addressed batches as the in-memory sets."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pruning_bench.cli import main
from pruning_bench.data import BatchStream, iterate_batches, load_dataset
from pruning_bench.data.download import Archive, fetch
from pruning_bench.data.imagefolder import ImageFiles
from pruning_bench.data.sources import clear_cache
from pruning_bench.errors import BenchError

SUITE = """
methods = ["dense", "snip"]
sparsities = [0.5]
seeds = [0]
[dataset]
name = "imagefolder"
val_fraction = 0.25
data_dir = "{root}"
options = {{ image_size = 8, resize = 10, workers = 2 }}
[model]
name = "digits_cnn"
[recipe]
lr = 0.05
batch_size = 4
eval_batch_size = 5
[budget]
epochs = 1
[method_params.snip]
score_batch_size = 4
"""


def _png(path: Path, rng: np.random.Generator, size: tuple[int, int] = (12, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c, cls in enumerate(["cat", "dog", "emu"]):
        for i in range(6):
            _png(root / "train" / cls / f"{i}.png", rng, (12 + c, 14))
        for i in range(2):
            _png(root / "val" / cls / f"{i}.PNG", rng)
    return root


def test_bench_run_on_an_image_folder(tmp_path, folder):
    suite = tmp_path / "tiny_folder.toml"
    suite.write_text(SUITE.format(root=folder))
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--epochs", "1", "--threads", "1",
                                       "--no-progress", "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "Ran 2 trials" in result.output


def test_streams_batches_without_a_whole_set_tensor(folder, monkeypatch):
    data = load_dataset("imagefolder", seed=0, val_fraction=0.25, data_dir=str(folder),
                        options={"image_size": 8, "resize": 10, "workers": 2})
    assert isinstance(data.train_x, ImageFiles) and isinstance(data.val_x, ImageFiles)
    assert isinstance(data.test_x, ImageFiles)
    assert (data.n_train, data.n_val, data.n_test, data.num_classes) == (14, 4, 6, 3)
    assert data.input_shape == (3, 8, 8) and data.augmentation == "rrc_flip"
    sizes: list[int] = []
    real = ImageFiles.decode

    def spy(self: ImageFiles, indices, stream=None):
        sizes.append(len(indices))
        return real(self, indices, stream)

    monkeypatch.setattr(ImageFiles, "decode", spy)
    stream = BatchStream(data.train_x, data.train_y, batch_size=4, data_seed=0, augmentation="rrc_flip",
                         mean=data.mean, std=data.std, device="cpu")
    for step in range(2 * stream.steps_per_epoch):
        xb, yb = stream.batch(step)
        assert xb.shape[1:] == (3, 8, 8) and xb.dtype == torch.float32 and len(xb) == len(yb)
    seen = [xb for xb, _ in iterate_batches(data.test_x, data.test_y, batch_size=5, mean=data.mean,
                                            std=data.std, device="cpu")]
    assert [len(b) for b in seen] == [5, 1]
    assert sizes and max(sizes) <= 5  # never more than a batch decoded at once


def test_two_streams_over_one_set_keep_their_own_prefetches(folder, monkeypatch):
    data = load_dataset("imagefolder", seed=0, val_fraction=0.25, data_dir=str(folder),
                        options={"image_size": 8, "resize": 10, "workers": 2})
    submitted: list[tuple[int, ...]] = []
    real = ImageFiles._submit

    def spy(self: ImageFiles, indices):
        submitted.append(tuple(indices))
        return real(self, indices)

    monkeypatch.setattr(ImageFiles, "_submit", spy)
    a, b = (BatchStream(data.train_x, data.train_y, batch_size=4, data_seed=seed, augmentation="none",
                        mean=data.mean, std=data.std, device="cpu") for seed in (1, 2))
    alone = BatchStream(data.train_x, data.train_y, batch_size=4, data_seed=1, augmentation="none",
                        mean=data.mean, std=data.std, device="cpu")
    for step in range(3):  # SWAMP-like: two particles' streams interleaved
        for stream in (a, b):
            stream.batch(step)
    # each stream: its first batch decoded on demand, then every batch from its own prefetch (2 ahead):
    # nothing is decoded twice because the other stream asked in between
    assert len(submitted) == 2 * (1 + 2 + 2) and len(set(submitted)) == len(submitted)
    assert torch.equal(a.batch(3)[0], alone.batch(3)[0])  # same seed, same batch, wherever it was decoded


def test_rewind_replays_the_same_batches(folder):
    data = load_dataset("imagefolder", seed=0, val_fraction=0.25, data_dir=str(folder),
                        options={"image_size": 8, "resize": 10, "workers": 2})

    def stream() -> BatchStream:
        return BatchStream(data.train_x, data.train_y, batch_size=4, data_seed=3, augmentation="rrc_flip",
                           mean=data.mean, std=data.std, device="cpu")

    s = stream()
    first = [s.batch(step) for step in range(6)]
    s.batch(5)  # a jump ahead, then a rewind to 0 on the same stream
    again = [s.batch(step) for step in range(6)]
    fresh = [stream().batch(step) for step in range(6)]
    for (xa, ya), (xb, yb), (xc, yc) in zip(first, again, fresh, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa, xc) and torch.equal(ya, yc)
    plain = BatchStream(data.train_x, data.train_y, batch_size=4, data_seed=3, augmentation="none",
                        mean=data.mean, std=data.std, device="cpu").batch(0)
    assert torch.equal(plain[1], first[0][1]) and not torch.equal(plain[0], first[0][0])  # augmented


def test_decoded_images_are_resized_and_center_cropped(folder):
    files = ImageFiles([str(next((folder / "val" / "cat").iterdir()))], image_size=8, resize=10, workers=1)
    out = files[torch.tensor([0])]
    assert out.shape == (1, 3, 8, 8) and out.dtype == torch.uint8
    assert torch.equal(files[0:1], out)
    assert isinstance(files.subset(torch.tensor([0, 0])), ImageFiles)


@pytest.mark.parametrize("layout", ["missing", "empty", "no_data_dir"])
def test_bad_folder_is_one_error_line(tmp_path, layout):
    root = tmp_path / "nothing"
    if layout == "empty":
        (root / "train" / "cat").mkdir(parents=True)
    text = SUITE.format(root=root)
    if layout == "no_data_dir":
        text = text.replace(f'data_dir = "{root}"\n', "")
    suite = tmp_path / "bad.toml"
    suite.write_text(text)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--epochs", "1", "--threads", "1",
                                       "--no-progress", "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    if layout == "no_data_dir":
        assert "needs data_dir" in lines[0]
    else:
        assert str(root / "train") in lines[0] and "<root>/train/<class>/" in lines[0]


def _tiny_tree(root: Path) -> Path:
    rng = np.random.default_rng(1)
    top = root / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (top / "val" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        for i in range(4):
            _png(top / "train" / w / "images" / f"{w}_{i}.JPEG", rng, (16, 16))
    rows = []
    for i, w in enumerate(["n01", "n02", "n02"]):
        _png(top / "val" / "images" / f"val_{i}.JPEG", rng, (16, 16))
        rows.append(f"val_{i}.JPEG\t{w}\t0\t0\t15\t15")
    (top / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    (top / "test" / "images").mkdir(parents=True)
    return top


def test_tiny_imagenet_layout(tmp_path):
    _tiny_tree(tmp_path)
    data = load_dataset("tiny_imagenet", seed=0, val_fraction=0.25, data_dir=str(tmp_path), download=False,
                        options={"image_size": 16})
    assert (data.n_train, data.n_val, data.n_test, data.num_classes) == (6, 2, 3, 2)
    assert data.test_y.tolist() == [0, 1, 1]  # n01 sorts first
    assert data.input_shape == (3, 16, 16) and data.test_x[torch.tensor([0, 2])].shape == (2, 3, 16, 16)


def test_tiny_imagenet_missing_without_download(tmp_path):
    with pytest.raises(BenchError, match="Tiny ImageNet not found"):
        load_dataset("tiny_imagenet", seed=0, data_dir=str(tmp_path), download=False)


def test_zip_archives_are_fetched_all_or_nothing(tmp_path, monkeypatch):
    top = _tiny_tree(tmp_path / "src")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(top.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(top.parent).as_posix())
    archive_path = tmp_path / "tiny.zip"
    archive_path.write_bytes(buf.getvalue())
    import hashlib

    md5 = hashlib.md5(buf.getvalue()).hexdigest()
    archive = Archive(title="Tiny", url=archive_path.as_uri(), md5=md5, folder="tiny-imagenet-200",
                      files=("wnids.txt", "val/val_annotations.txt"), expected="wnids.txt")
    root = tmp_path / "cache"
    folder = fetch(archive, root)
    assert (folder / "train" / "n01" / "images" / "n01_0.JPEG").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["tiny-imagenet-200"]
