"""Whole-batch data augmentation on tensors (no per-sample Python loop), on whatever device they live."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pruning_bench.errors import unknown_choice

AUGMENTATIONS = ("none", "crop_flip", "rrc_flip")


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


def random_resized_crop_flip(
    x: torch.Tensor, *, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random-resized crop + horizontal flip of a float batch (B, C, H, W), per sample, output the same size:
    a window of area fraction U(scale) and aspect ratio log-U(ratio) (clipped to the image) is resampled
    bilinearly to HxW (one ``grid_sample`` for the whole batch) and flipped with probability 0.5."""
    if x.dim() != 4:
        raise ValueError(f"random_resized_crop_flip expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, dev = x.shape[0], x.device
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=generator, device=dev)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(b, generator=generator, device=dev))
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # window width / image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(b, generator=generator, device=dev) - 1)  # centre in [-1, 1] coordinates
    cy = (1 - h) * (2 * torch.rand(b, generator=generator, device=dev) - 1)
    flip = torch.where(torch.rand(b, generator=generator, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros((b, 2, 3), device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_augmentation(name: str, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply augmentation `name` ("none", "crop_flip" or "rrc_flip") to a float batch."""
    if name == "none":
        return x
    if name == "crop_flip":
        return random_crop_flip(x, generator=generator)
    if name == "rrc_flip":
        return random_resized_crop_flip(x, generator=generator)
    raise unknown_choice("augmentation", name, AUGMENTATIONS)
