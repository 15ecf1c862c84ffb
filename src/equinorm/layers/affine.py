"""Per-channel normalization layers that follow a convolution (docs/spec.md section 2).

- :class:`ChannelAffine`: the per-channel affine ``y = gamma x + beta`` that follows an EquiNorm
  convolution (paper section 4: "as with BatchNorm, we also include an additional affine
  transformation after the convolution").
- :class:`MeanOnlyBatchNorm2d`: BatchNorm without the variance division, the companion of Weight
  Normalization (Salimans & Kingma 2016, section 5.1).
- :class:`GroupNorm`: GroupNorm with the channel count first, so that every norm is
  ``norm_layer(num_channels)`` (timm's convention).
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ChannelAffine", "GroupNorm", "MeanOnlyBatchNorm2d", "group_fallbacks"]


#: batch_norm's eps: torch 2.11 (the GPU image's) refuses 0 even in evaluation ("eps must be
#: positive"); 1 + 1e-20 rounds to 1 in float32 and float64, so the variance term stays exactly 1
TINY = 1e-20


class ChannelAffine(nn.Module):
    """``y[:, c] = weight[c] * x[:, c] + bias[c]``; scale 1 and shift 0 at init.

    Computed as an evaluation-mode ``batch_norm`` with mean 0, variance 1 and eps :data:`TINY` --
    exactly the affine map, in one native kernel with a fused backward (fewer ops than
    ``x * w + b``). The
    zeros and ones are made at each call, not kept as buffers: a module built on the meta device
    and loaded from a checkpoint (which holds no such buffers) would compute with garbage.

    ``foldable``: a convolution that directly precedes it may apply it inside its own weight
    transform (``EquiConv2d.fold_affine``); it then keeps its parameters and passes ``x`` through.
    """

    foldable = True

    def __init__(self, num_channels: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.folded = False
        self.weight = nn.Parameter(torch.ones(num_channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.folded:  # applied by the preceding convolution
            return x
        zero = self.weight.new_zeros(self.num_channels)
        one = self.weight.new_ones(self.num_channels)
        return F.batch_norm(x, zero, one, self.weight, self.bias, False, 0.0, TINY)

    def extra_repr(self) -> str:
        return f"{self.num_channels}" + (", folded into the preceding conv" if self.folded else "")


class MeanOnlyBatchNorm2d(nn.Module):
    """Subtract the per-channel batch mean (a running mean in eval mode) and add a learned bias."""

    def __init__(self, num_channels: int, momentum: float = 0.1, device=None, dtype=None) -> None:
        if momentum is None or not 0.0 < momentum <= 1.0:  # <= 0 or > 1: a running mean that
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")  # never or over-moves
        super().__init__()
        self.num_channels = num_channels
        self.momentum = momentum
        self.bias = nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))
        self.register_buffer("running_mean", torch.zeros(num_channels, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.running_mean)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] > 0:  # an empty batch has no mean to track
            mean = x.mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
        else:
            mean = self.running_mean
        return x + (self.bias - mean).to(x.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, momentum={self.momentum}"


class GroupNorm(nn.GroupNorm):
    """``GroupNorm(num_channels, num_groups=32)``.

    If ``num_channels`` is not a multiple of ``num_groups`` (reduced-width nets for tests and the
    CPU demo), the largest common divisor is used instead, so narrow nets still build
    (:func:`group_fallbacks` says where that gave fewer groups than the channels allow).
    """

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, **kw) -> None:
        if num_groups < 1:
            raise ValueError(f"groups must be >= 1, got {num_groups}")
        super().__init__(math.gcd(num_groups, num_channels), num_channels, eps=eps, **kw)
        self.requested_groups = num_groups


def group_fallbacks(model: nn.Module) -> str:
    """Where ``model``'s GroupNorms have fewer groups than asked for and than their channels
    allow (a requested count that does not divide the channels), e.g. ``16 of 32 groups at 48
    channels (2 layers)``; '' where none has (a layer narrower than the groups has one channel per
    group: as many as it can)."""
    fell = Counter(
        (m.num_channels, m.num_groups, m.requested_groups)
        for m in model.modules()
        if isinstance(m, GroupNorm) and m.num_groups < min(m.requested_groups, m.num_channels)
    )
    return ", ".join(
        f"{g} of {r} groups at {c} channels ({n} layer{'s' if n > 1 else ''})"
        for (c, g, r), n in sorted(fell.items())
    )
