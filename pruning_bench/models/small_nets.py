"""Small CNNs for the embedded data sets (MNIST-1D, sklearn digits) and for fast tests.

Every conv is followed by a BatchNorm layer (so network slimming, Liu et al. 2017, applies) and has no
bias of its own (the BN makes it redundant).
"""

from __future__ import annotations

import torch
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.models.cifar_resnet import conv_init


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class MNIST1DCNN(nn.Module):
    """The MNIST-1D baseline CNN (Greydanus, "Scaling Down Deep Learning", 2020, ``ConvBase``) plus BN.

    Three Conv1d layers with ``channels`` channels (25 in the paper) and stride 2 / padding 1 (kernel 5,
    then 3 and 3), each followed by BatchNorm1d and ReLU, then the flattened maps (channels x 5 for length
    40) go to one Linear. Input (N, C, L), C = 1 for MNIST-1D.

    Width and the pruning regime (measured here: mnist1d, 40 epochs, lr 0.1 cosine, 3 seeds, test %):
    with the paper's 25 channels (5,125 prunable weights) the net is too small for 90% sparsity: dense
    95.2, one-shot global magnitude at 90% 71.1 (equal budget), every method collapses there. With 64
    channels (28,096 weights) dense 95.3 and global magnitude at 90% 92.8, the over-parameterised regime
    of the pruning literature, where a good method at 90% stays within a few points of dense. The
    default suite uses 64 (48 channels: 95.6 vs 90.2, 5 points apart). A 1-D ResNet was not needed.
    """

    LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding)

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], channels: int = 25) -> None:
        super().__init__()
        in_channels, length = input_shape
        for kernel, stride, padding in self.LAYERS:
            length = _conv_out(length, kernel, stride, padding)
        if length < 1:
            raise BenchError(
                f"mnist1d_cnn needs signals of length >= 3, got input_shape {tuple(input_shape)}"
            )
        (k1, s1, p1), (k2, s2, p2), (k3, s3, p3) = self.LAYERS
        self.conv1 = nn.Conv1d(in_channels, channels, k1, stride=s1, padding=p1, bias=False)
        self.bn1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, k2, stride=s2, padding=p2, bias=False)
        self.bn2 = nn.BatchNorm1d(channels)
        self.conv3 = nn.Conv1d(channels, channels, k3, stride=s3, padding=p3, bias=False)
        self.bn3 = nn.BatchNorm1d(channels)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.linear = nn.Linear(channels * length, num_classes)
        conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.linear(torch.flatten(x, 1))


class DigitsCNN(nn.Module):
    """Small CNN for the 8x8 sklearn digits (UCI optical digits; Alpaydin & Kaynak 1998).

    conv3x3(16)-BN-ReLU, conv3x3(32)-BN-ReLU, max-pool 2, conv3x3(32)-BN-ReLU, global average pooling,
    Linear(32, num_classes). Input (N, C, H, W) with H, W >= 2.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        if min(height, width) < 2:
            raise BenchError(f"digits_cnn needs images of at least 2x2, got input_shape {tuple(input_shape)}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)
        conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class SmokeCNN(nn.Module):
    """A tiny 1-D CNN for tests: Conv1d(8)-BN-ReLU, Conv1d(16, stride 2)-BN-ReLU, average pool, Linear.

    Input (N, C, L) with any L >= 1; about 600 parameters for C = 1 and 10 classes.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        in_channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, 8, 3, padding=1, bias=False),
            nn.BatchNorm1d(8),
            nn.ReLU(inplace=True),
            nn.Conv1d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(16),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.classifier = nn.Linear(16, num_classes)
        conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mnist1d_cnn(*, num_classes: int, input_shape: tuple[int, ...], channels: int = 25) -> MNIST1DCNN:
    """Build the MNIST-1D CNN for signals of shape (C, L) with ``channels`` per conv layer."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    return MNIST1DCNN(num_classes, input_shape, channels=channels)


def digits_cnn(*, num_classes: int, input_shape: tuple[int, ...]) -> DigitsCNN:
    """Build the digits CNN for images of shape (C, H, W)."""
    return DigitsCNN(num_classes, input_shape)


def smoke_cnn(*, num_classes: int, input_shape: tuple[int, ...]) -> SmokeCNN:
    """Build the tiny test CNN for signals of shape (C, L)."""
    return SmokeCNN(num_classes, input_shape)


class LeNet300100(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998), the lottery-ticket paper's first network (Frankle & Carbin 2019,
    §2): the flattened image through fully connected layers of 300 and 100 units with ReLU, then the
    classifier; 266,200 weights for 28x28 inputs. No BatchNorm, so channel-pruning methods do not apply."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        features = 1
        for size in input_shape:
            features *= size
        self.fc1, self.fc2 = nn.Linear(features, 300), nn.Linear(300, 100)
        self.fc = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc(torch.relu(self.fc2(x)))


def lenet_300_100(*, num_classes: int, input_shape: tuple[int, ...]) -> LeNet300100:
    """Build LeNet-300-100 for images of shape (C, H, W)."""
    return LeNet300100(num_classes, input_shape)
