"""CIFAR ResNets of depth 6n+2 (ResNet-20/32/44/56/110).

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2: a 3x3 stem conv
with 16 filters, then three stages of n basic blocks with 16/32/64 filters (the first block of stages
2 and 3 halves the feature map with stride 2), global average pooling and one fully connected layer.

Shortcuts follow option B of the paper (a 1x1 conv + BN projection where the shape changes, identity
elsewhere), as in the OpenLTH ``cifar_resnet`` used by Frankle & Carbin's lottery-ticket experiments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pruning_bench.errors import BenchError

STAGE_WIDTHS = (16, 32, 64)


def conv_init(module: nn.Module) -> None:
    """OpenLTH's initialisation: ``kaiming_normal_`` on conv/linear weights, BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, add the shortcut, ReLU.

    ``shortcut`` is an empty ``nn.Sequential`` (identity) or ``Sequential(Conv2d 1x1, BatchNorm2d)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images (He et al. 2016, §4.2) with option-B projection shortcuts."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise BenchError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56, 110), got {depth}. "
                "For ImageNet-style ResNets use 'timm:resnet18' or 'torchvision:resnet18'."
            )
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages = []
        width_in = STAGE_WIDTHS[0]
        for i, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(width_in, width, stride))
                width_in = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.pool(out), 1))


def cifar_resnet(depth: int, *, num_classes: int, input_shape: tuple[int, ...]) -> CifarResNet:
    """Build ResNet-``depth`` for images of shape (C, H, W)."""
    return CifarResNet(depth, num_classes, in_channels=input_shape[0])
