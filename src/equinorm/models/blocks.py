"""Residual blocks, written against the seam: ``conv(in, out, k, stride=, padding=)``, ``norm(C)``.

- :class:`PreActBasicBlock`: norm-ReLU-conv3x3 twice (He et al. 2016a), used by the paper's WRN and
  PreActResNet-18/34.
- :class:`PreActBottleneck`: norm-ReLU-conv 1x1/3x3/1x1, expansion 4, as in the manifold mixup
  reference code (PreActResNet-50/101/152). Projection shortcuts are a bare 1x1 conv applied to the
  pre-activated input.
- :class:`Bottleneck`: the post-activation ImageNet bottleneck of torchvision's ResNet-50 (v1.5:
  stride on the 3x3), with the same attribute names so that torchvision state_dicts load.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

ConvLayer = Callable[..., nn.Module]
NormLayer = Callable[[int], nn.Module]


def scaled(channels: int, width_mult: float) -> int:
    """A channel count scaled for reduced-width nets (at least 4, so every layer stays valid)."""
    return max(4, round(channels * width_mult))


class PreActBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, conv: ConvLayer, norm: NormLayer):
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = norm(in_ch)
        self.conv1 = conv(in_ch, planes, 3, stride=stride, padding=1)
        self.bn2 = norm(planes)
        self.conv2 = conv(planes, out_ch, 3, stride=1, padding=1)
        self.shortcut = (
            conv(in_ch, out_ch, 1, stride=stride, padding=0)
            if stride != 1 or in_ch != out_ch
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, conv: ConvLayer, norm: NormLayer):
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = norm(in_ch)
        self.conv1 = conv(in_ch, planes, 1, stride=1, padding=0)
        self.bn2 = norm(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1)
        self.bn3 = norm(planes)
        self.conv3 = conv(planes, out_ch, 1, stride=1, padding=0)
        self.shortcut = (
            conv(in_ch, out_ch, 1, stride=stride, padding=0)
            if stride != 1 or in_ch != out_ch
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck; ``residual_scale`` is the branch's closing norm."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, conv: ConvLayer, norm: NormLayer):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv(in_ch, planes, 1, stride=1, padding=0)
        self.bn1 = norm(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1)
        self.bn2 = norm(planes)
        self.conv3 = conv(planes, out_ch, 1, stride=1, padding=0)
        self.bn3 = norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(conv(in_ch, out_ch, 1, stride=stride, padding=0), norm(out_ch))
            if stride != 1 or in_ch != out_ch
            else None
        )

    @property
    def residual_scale(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(block, in_ch, planes, depth, stride, conv, norm) -> tuple[nn.Sequential, int]:
    """``depth`` blocks, the first with ``stride``; returns the stage and its output channels."""
    layers = []
    for i in range(depth):
        layers.append(block(in_ch, planes, stride if i == 0 else 1, conv, norm))
        in_ch = planes * block.expansion
    return nn.Sequential(*layers), in_ch


def make_stages(block, in_ch, widths, depths, conv, norm) -> tuple[list[nn.Sequential], int]:
    """One stage per (width, depth), strides 1 then 2; returns the stages and their output width."""
    stages = []
    for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        stage, in_ch = make_stage(block, in_ch, width, depth, 1 if i == 0 else 2, conv, norm)
        stages.append(stage)
    return stages, in_ch
