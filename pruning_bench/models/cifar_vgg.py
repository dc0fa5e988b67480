"""VGG-11/13/16/19 with batch normalisation, CIFAR variant.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015
(configurations A, B, D, E), with BN after every conv (Ioffe & Szegedy 2015). As in the OpenLTH
``cifar_vgg`` used for the lottery-ticket experiments (Frankle & Carbin 2019), the fifth max-pool and the
three large fully connected layers are dropped: after the conv stack the 512 feature maps are averaged
over space and fed to ONE ``Linear(512, num_classes)``.
"""

from __future__ import annotations

import torch
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.models.cifar_resnet import conv_init

# Channels per conv, "M" = 2x2 max-pool. The ImageNet configs' final "M" is omitted (OpenLTH).
CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """VGG-BN: ``features`` (Conv2d-BatchNorm2d-ReLU stacks and MaxPool2d) then ``classifier`` (Linear).

    Convs have no bias (the following BN makes it redundant), so removing a BN channel removes the whole
    filter (network slimming).
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in CONFIGS:
            raise BenchError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        self.depth = depth
        layers: list[nn.Module] = []
        channels = in_channels
        for item in CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(channels, item, 3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def cifar_vgg(depth: int, *, num_classes: int, input_shape: tuple[int, ...]) -> CifarVGG:
    """Build VGG-``depth``-BN for images of shape (C, H, W) with H, W >= 16 (four 2x2 max-pools)."""
    pools = CONFIGS[depth].count("M") if depth in CONFIGS else 0
    if min(input_shape[1:]) < 2**pools:
        raise BenchError(
            f"vgg{depth}_bn needs images of at least {2**pools}x{2**pools} ({pools} max-pools), "
            f"got input_shape {tuple(input_shape)}"
        )
    return CifarVGG(depth, num_classes, in_channels=input_shape[0])
