"""Whole-batch data augmentation on tensors (no per-sample Python loop), on whatever device they live."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pruning_bench.errors import unknown_choice

AUGMENTATIONS = ("none", "crop_flip")


def random_crop_flip(x: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad a float batch (B, C, H, W) by `padding`, crop an HxW window at a random offset per sample,
    and flip each sample horizontally with probability 0.5."""
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    off_y = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
    off_x = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
    flip = torch.rand((b, 1), generator=generator, device=dev) < 0.5
    rows = off_y + torch.arange(h, device=dev)  # (B, H)
    cols = off_x + torch.arange(w, device=dev)  # (B, W)
    cols = torch.where(flip, cols.flip(1), cols)
    batch_idx = torch.arange(b, device=dev).view(b, 1, 1, 1)
    chan_idx = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[batch_idx, chan_idx, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def apply_augmentation(name: str, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply augmentation `name` ("none" or "crop_flip") to a float batch."""
    if name == "none":
        return x
    if name == "crop_flip":
        return random_crop_flip(x, generator=generator)
    raise unknown_choice("augmentation", name, AUGMENTATIONS)
