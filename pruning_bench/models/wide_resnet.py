"""Wide residual networks WRN-d-k.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016: a 3x3 stem conv with 16 filters, three groups
of N = (d-4)/6 pre-activation "wide" basic blocks B(3,3) with 16k/32k/64k filters (stride 2 at the start
of groups 2 and 3), then BN-ReLU, global average pooling and one fully connected layer. Where a block
changes the shape, its shortcut is a 1x1 conv applied to the pre-activated input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.models.cifar_resnet import conv_init


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the shortcut.

    ``bn1`` normalises the block input (the channels of ``conv1``'s input), ``bn2`` the output of
    ``conv1``. ``shortcut`` is an empty ``nn.Sequential`` (identity) or ``Sequential(Conv2d 1x1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # The projection sees the pre-activated input, the identity the raw input (as in the paper's code).
        residual = self.shortcut(pre) if len(self.shortcut) else x
        return out + residual


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` (Zagoruyko & Komodakis 2016); depth - 4 must be divisible by 6."""

    def __init__(
        self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise BenchError(f"WRN depth must be 6n+4 with n >= 1 (e.g. 16, 22, 28, 40), got {depth}")
        if widen < 1:
            raise BenchError(f"WRN widening factor must be >= 1, got {widen}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.depth, self.widen = depth, widen
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        groups = []
        width_in = 16
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(WideBasicBlock(width_in, width, stride, dropout))
                width_in = width
            groups.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = groups
        self.bn = nn.BatchNorm2d(widths[-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(self.pool(out), 1))


def wide_resnet(depth: int, widen: int, *, num_classes: int, input_shape: tuple[int, ...]) -> WideResNet:
    """Build WRN-``depth``-``widen`` for images of shape (C, H, W), dropout 0."""
    return WideResNet(depth, widen, num_classes, in_channels=input_shape[0])
