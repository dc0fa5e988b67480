"""Tests for feeding the data of pruning_bench.data to training: step-addressed batch streams, in-order
evaluation batches, normalisation and layout, and the crop-and-flip augmentation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_data import CPU

from pruning_bench.data import BatchStream, iterate_batches
from pruning_bench.data.augment import apply_augmentation, random_crop_flip
from pruning_bench.errors import BenchError

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
