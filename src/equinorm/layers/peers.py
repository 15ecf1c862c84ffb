"""Weight-space peers of EquiNorm (docs/spec.md section 2), each a drop-in Conv2d like EquiConv2d.

- :class:`StdConv2d`: Weight Standardization (Qiao et al. 2019), used with GroupNorm as in BiT:
  each output channel's kernel is shifted to mean 0 and scaled to variance 1.
- :class:`WNConv2d`: Weight Normalization (Salimans & Kingma 2016): ``w = g v / ||v||`` per output
  channel, with a learned gain ``g`` (initialised so that ``w = v`` at init).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["StdConv2d", "WNConv2d"]


class StdConv2d(nn.Conv2d):
    """Conv2d with a weight-standardized kernel: ``(w - mean_d) / sqrt(var_d + eps)``."""

    def __init__(self, *args, eps: float = 1e-6, **kwargs) -> None:
        if not (eps >= 0.0 and math.isfinite(eps)):  # a negative one: NaN from the first step
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        self.eps = eps
        super().__init__(*args, **kwargs)

    def standardized_weight(self) -> Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (self.weight - mean) * torch.rsqrt(var + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class WNConv2d(nn.Conv2d):
    """Conv2d with a weight-normalized kernel ``w = g v / ||v||``; ``self.weight`` is ``v``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.empty(self.out_channels, **_factory(self.weight)))
        self.post_init_()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.post_init_()

    @torch.no_grad()
    def post_init_(self) -> None:
        """Set ``g = ||v||`` so the effective kernel equals the freshly initialised ``v``."""
        if hasattr(self, "gain"):
            self.gain.copy_(self.weight.flatten(1).norm(dim=1))

    def normalized_weight(self) -> Tensor:
        norm = self.weight.flatten(1).norm(dim=1)
        return self.weight * (self.gain / norm).view(-1, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.normalized_weight(), self.bias)


def _factory(t: Tensor) -> dict:
    return {"device": t.device, "dtype": t.dtype}
