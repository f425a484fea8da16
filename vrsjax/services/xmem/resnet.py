"""The two ResNet trunks of XMem, cut after layer3 and built without any pretrained download.

XMem's key encoder is a ResNet-50 and its value encoder a ResNet-18 with two extra input channels (the object's
mask and the other objects' masks); both stop at layer3 (stride 16). The blocks are torchvision's v1.5 ResNet
blocks (the stride sits on the 3x3 convolution of a bottleneck), so parameter names follow torchvision's
(`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, ...), which is what the official `XMem.pth` stores.
Weights are left at PyTorch's default initialisation: real weights always come from a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(in_dim: int, out_dim: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=stride, padding=1, bias=False)


def _downsample(in_dim: int, out_dim: int, stride: int) -> nn.Sequential | None:
    """The 1x1 projection of the residual branch when the block changes resolution or width."""
    if stride == 1 and in_dim == out_dim:
        return None
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_dim))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_dim: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_dim, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_dim, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with a residual (ResNet-50 and up)."""

    expansion = 4

    def __init__(self, in_dim: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(in_dim, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + residual)


def make_layer(
    block: type[BasicBlock | Bottleneck], in_dim: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """`blocks` residual blocks; the first one strides and projects."""
    layers = [block(in_dim, planes, stride)]
    layers += [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def stem_conv(in_dim: int) -> nn.Conv2d:
    """The 7x7 stride-2 input convolution (3 channels for keys, 5 for values)."""
    return nn.Conv2d(in_dim, 64, kernel_size=7, stride=2, padding=3, bias=False)


def max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
