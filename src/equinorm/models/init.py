"""Weight initialisation that keys on tensor rank and a protocol, never on class names.

- every rank-4 parameter (a convolution kernel, whatever the conv class) gets He fan_out normal
  init (paper section 6.1, He et al. 2015);
- then every module that defines ``post_init_()`` re-establishes its own invariant (EquiConv2d:
  balanced signs; weight-normed conv: ``g = ||v||``);
- optionally, each residual branch's closing scale is set to zero (Goyal et al. 2017).

Norm layers and the linear classifier keep PyTorch's defaults (scale 1, shift 0).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["init_weights"]


@torch.no_grad()
def init_weights(model: nn.Module, zero_init_residual: bool = False) -> nn.Module:
    for p in model.parameters():
        if p.dim() == 4 and not p.is_meta:
            nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
    for m in model.modules():
        post_init = getattr(m, "post_init_", None)
        if callable(post_init):
            post_init()
    if zero_init_residual:
        scales = model.residual_scales()
        if not scales:
            raise ValueError(
                "zero_init_residual=true needs residual branches that end in a norm scale "
                "(resnet50); this architecture's branches end in a convolution"
            )
        for norm in scales:
            if getattr(norm, "weight", None) is not None:
                nn.init.zeros_(norm.weight)
    return model
