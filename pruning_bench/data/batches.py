"""Training batches addressed by global step (`BatchStream`) and in-order evaluation batches.

Inputs are uint8 images (scaled to [0, 1]) or float signals, normalised with the data set's mean / std and
augmented; int64 inputs are token ids and pass through untouched (no mean / std, augmentation "none")."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch

from pruning_bench.data.augment import AUGMENTATIONS, apply_augmentation
from pruning_bench.errors import unknown_choice
from pruning_bench.seeds import mix_seed


def _stats(values: Sequence[float], channels: int, ndim: int, device: torch.device, what: str) -> torch.Tensor:
    """Per-channel statistics shaped (C, 1, ..., 1) to broadcast over a batch of rank `ndim`; no values
    (token ids) gives identity statistics."""
    if not values:  # token ids: nothing to normalise (identity statistics)
        return torch.tensor(0.0 if what == "mean" else 1.0, device=device)
    t = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)
    if t.numel() not in (1, channels):
        raise ValueError(f"{what} has {t.numel()} values for {channels} channels")
    return t.expand(channels).reshape(channels, *([1] * (ndim - 2))).clone()


def _prepare(
    xb: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, augmentation: str,
    generator: torch.Generator | None, channels_last: bool,
) -> torch.Tensor:
    if xb.dtype == torch.int64:  # token ids
        return xb
    xb = xb.float().div(255.0) if xb.dtype == torch.uint8 else xb.float()
    xb = apply_augmentation(augmentation, xb, generator)
    xb = (xb - mean) / std  # out of place: never writes into the stored data
    if channels_last and xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


_STREAM_TOKENS = itertools.count()


class BatchStream:
    """Deterministic training batches addressed by global step: batch s comes from epoch s // steps_per_epoch.

    Epoch e is ordered by a permutation seeded from (data_seed, e), and the augmentation of step s by a
    generator seeded from (data_seed, s), so a batch depends only on (data_seed, step).
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, data_seed: int, augmentation: str,
        mean: Sequence[float], std: Sequence[float], device: torch.device | str, channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"need as many labels as samples, and at least one: {x.shape[0]} vs {y.shape[0]}")
        if augmentation not in AUGMENTATIONS:
            raise unknown_choice("augmentation", augmentation, AUGMENTATIONS)
        self.device = torch.device(device)
        # a lazy image set (data.imagefolder.ImageFiles) stays on the host; its batches are moved
        self.x = x.to(self.device) if x.dtype in (torch.uint8, torch.int64) else x.to(self.device, torch.float32)
        self.prefetch_steps = 2 if hasattr(x, "prefetch") else 0
        self._token = next(_STREAM_TOKENS)  # this stream's own prefetch queue in a lazy image set
        self.y = y.to(self.device, torch.long)
        self.n = int(x.shape[0])
        self.batch_size = batch_size
        self.data_seed = data_seed
        self.augmentation = augmentation
        self.channels_last = channels_last
        self.steps_per_epoch = -(-self.n // batch_size)
        self.mean = _stats(mean, x.shape[1], x.dim(), self.device, "mean")
        self.std = _stats(std, x.shape[1], x.dim(), self.device, "std")
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of `epoch` (on the device); the last two epochs' are cached."""
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(mix_seed("perm", self.data_seed, epoch))
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1 or e == epoch + 1}
            self._perms[epoch] = torch.randperm(self.n, generator=gen).to(self.device)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """The sample indices of global step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (float32, normalised, augmented) and labels of global step `step`, on the device."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        idx = self.indices(step)
        if self.prefetch_steps:  # a lazy image set: decode the next steps' images while this one trains
            xb = self.x.decode(idx.cpu().tolist(), stream=self._token).to(self.device, non_blocking=True)
            self.x.prefetch([self.indices(s).cpu() for s in range(step + 1, step + 1 + self.prefetch_steps)],
                            stream=self._token)
        else:
            xb = self.x[idx].to(self.device, non_blocking=True)
        generator = None
        if self.augmentation != "none":
            generator = torch.Generator(device=self.device).manual_seed(mix_seed("aug", self.data_seed, step))
        xb = _prepare(xb, self.mean, self.std, self.augmentation, generator, self.channels_last)
        return xb, self.y[idx]


def iterate_batches(
    x: torch.Tensor, y: torch.Tensor, *, batch_size: int, mean: Sequence[float], std: Sequence[float],
    device: torch.device | str, channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All samples in order, normalised and not augmented, `batch_size` at a time (for evaluation)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    mean_t = _stats(mean, x.shape[1], x.dim(), device, "mean")
    std_t = _stats(std, x.shape[1], x.dim(), device, "std")
    for start in range(0, int(x.shape[0]), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        yb = y[start : start + batch_size].to(device, torch.long, non_blocking=True)
        yield _prepare(xb, mean_t, std_t, "none", None, channels_last), yb
