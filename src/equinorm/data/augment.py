"""Batched, on-device random crop + horizontal flip with torchvision's exact semantics.

``RandomCrop(size, padding=p)`` (zero padding) followed by ``RandomHorizontalFlip()`` is, per
image, a read of the zero-padded image at rows ``top + i`` and columns ``left + j``
(``left + W-1-j`` when flipped). Given the same offsets and flips the pixels are identical to
torchvision's; the whole batch is one gather on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Crop each image of ``images`` (B, C, H, W) at (top, left) of its zero-padded copy; flip.

    ``top``/``left`` are in [0, 2*padding]; ``flip`` is a bool tensor. All on ``images.device``.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = top.view(b, 1) + torch.arange(h, device=images.device)
    cols_fwd = torch.arange(w, device=images.device)
    cols = left.view(b, 1) + torch.where(flip.view(b, 1), cols_fwd.flip(0), cols_fwd)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def draw_crop_flip(
    n: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Offsets and flips for ``n`` images, drawn like torchvision (uniform offsets, p=0.5 flip),
    on the generator's device (the CPU for the loaders: the same draws whatever the device)."""
    on = {"generator": generator, "device": generator.device}  # not torch's default device
    top = torch.randint(0, 2 * padding + 1, (n,), **on)
    left = torch.randint(0, 2 * padding + 1, (n,), **on)
    if flip:
        flips = torch.rand(n, **on) < 0.5
    else:
        flips = torch.zeros(n, dtype=torch.bool, device=generator.device)
    return top, left, flips
