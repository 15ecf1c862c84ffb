"""Equilibrium Normalization of convolution weights (EquiNorm; paper section 4, SPEC section 1).

EquiNorm rescales and shifts each output channel's kernel, using the per-input-channel means of the
layer's input, so that the positive and the negative weights contribute equally -- and with a fixed
total magnitude -- to the layer's output:

    b_d = -(sum_c m_c w_dc) / (K sum_c m_c)                       (centres the output)
    s_d = (H_out W_out t^2 / (H_in W_in)) / (sum_c m_c P_dc)       (positive total = r)
    w'' = s_d (w + b_d)

with ``w_dc`` the kernel sums, ``K = kh*kw`` and ``P_dc`` the sum of the positive parts of the
shifted kernel (exact, two-pass) or its single-pass estimate (the variant the paper's experiments
use). Written with per-element means ``m_c`` the transform does not depend on the batch size.

The layer is a drop-in :class:`torch.nn.Conv2d` (the template is timm's ``StdConv2d``): it
transforms ``self.weight`` in ``forward`` and convolves with the result. Autograd differentiates
through everything, so gradients reach the weights through ``b`` and ``s`` and the input through
the channel means, as BatchNorm's gradients reach its input through the batch mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

__all__ = [
    "EquiConv2d",
    "balance_signs_",
    "conv_output_size",
    "equi_scale_factor",
    "equi_weight",
    "input_channel_means",
]


def input_channel_means(x: Tensor, stat_fraction: float = 1.0) -> Tensor:
    """Per-input-channel mean ``m_c`` of ``x`` (N, C, H, W) over its first ``ceil(f*N)`` examples.

    Reduced-precision inputs (bf16/fp16 under autocast) are accumulated and returned in float32.
    """
    n = math.ceil(stat_fraction * x.shape[0])
    stats = x if n == x.shape[0] else x[:n]
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return stats.mean(dim=(0, 2, 3), dtype=dtype)


def conv_output_size(
    size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int] | str,
    dilation: Sequence[int],
) -> tuple[int, int]:
    """Spatial output size of a 2-d convolution (``padding`` as Conv2d takes it)."""
    if padding == "same":
        return int(size[0]), int(size[1])
    pad = (0, 0) if padding == "valid" else padding
    return tuple(  # type: ignore[return-value]
        (size[i] + 2 * pad[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1
        for i in range(2)
    )


def equi_scale_factor(
    in_size: Sequence[int], out_size: Sequence[int], stride: Sequence[int]
) -> float:
    """The batch-size-free form of ``r / sum_c v_c``: ``H_out W_out t_h t_w / (H_in W_in)``."""
    return (out_size[0] * out_size[1] * stride[0] * stride[1]) / (in_size[0] * in_size[1])


def equi_weight(
    weight: Tensor,
    channel_means: Tensor,
    scale_factor: float = 1.0,
    single_pass: bool = True,
    groups: int = 1,
) -> Tensor:
    """EquiNorm's weight transform: ``w'' = s (w + b)`` per output channel (SPEC section 1).

    Args:
        weight: kernel ``w`` of shape (C_out, C_in / groups, kh, kw).
        channel_means: ``m_c``, the mean of the layer's input per input channel, shape (C_in,).
        scale_factor: ``H_out W_out t^2 / (H_in W_in)`` (see :func:`equi_scale_factor`); the
            positive weights' total contribution per output element then averages 1.
        single_pass: the paper's single-pass estimate of the positive sums (its experiments) if
            True, the exact two-pass form if False.
        groups: the convolution's groups; output channel ``d`` sees the input channels of its group.

    Returns:
        The normalized kernel, same shape and dtype as ``weight``.
    """
    c_out, c_in_g = weight.shape[:2]
    m = channel_means.to(weight.dtype)
    if groups == 1:
        m_dc = m.unsqueeze(0)  # (1, C_in): the same statistics for every output channel
    else:  # output channel d belongs to group d // (C_out / groups)
        m_dc = m.view(groups, c_in_g).repeat_interleave(c_out // groups, dim=0)
    k = weight.shape[2] * weight.shape[3]

    w_dc = weight.sum(dim=(2, 3))  # (C_out, C_in_g)
    m_sum = m_dc.sum(dim=1)  # sum_c m_c
    b = -(m_dc * w_dc).sum(dim=1) / (k * m_sum)  # (C_out,)
    shifted = weight + b.view(-1, 1, 1, 1)
    if single_pass:
        positive = weight > 0
        p_dc = (weight * positive).sum(dim=(2, 3)) + b.unsqueeze(1) * positive.sum(dim=(2, 3))
    else:
        p_dc = shifted.clamp(min=0).sum(dim=(2, 3))
    s = scale_factor / (m_dc * p_dc).sum(dim=1)
    return shifted * s.view(-1, 1, 1, 1)


@torch.no_grad()
def balance_signs_(weight: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Redraw the signs of every one-sign kernel slice until it has both signs (in place).

    A slice is ``w[d, c]`` (kh x kw), or the whole output channel ``w[d]`` for 1x1 kernels (paper
    section 5.2: balanced initialisation keeps EquiNorm's denominator away from zero).
    """
    if weight.is_meta:  # shape-only tensors (parameter counting) have no signs to balance
        return weight
    slices = weight.flatten(0, 1) if weight.shape[2] * weight.shape[3] > 1 else weight
    flat = slices.reshape(slices.shape[0], -1)
    if flat.shape[1] < 2:
        raise ValueError(
            f"a kernel slice of shape {tuple(weight.shape)} holds a single weight and can never "
            "have both signs; EquiNorm needs at least two weights per output channel"
        )
    while True:
        one_sign = (flat > 0).all(dim=1) | (flat < 0).all(dim=1)
        if not bool(one_sign.any()):
            return weight
        rows = flat[one_sign]
        flip = torch.randint(0, 2, rows.shape, generator=generator, device=rows.device)
        flat[one_sign] = rows.abs() * (2 * flip - 1).to(rows.dtype)
        slices.copy_(flat.view_as(slices))


class EquiConv2d(nn.Conv2d):
    """A :class:`torch.nn.Conv2d` whose kernel is normalized by EquiNorm before each convolution.

    Takes Conv2d's arguments, plus:

    Args:
        single_pass: the paper's single-pass estimate of the positive sums (True, as in all of the
            paper's experiments) or the exact two-pass form (False).
        stat_fraction: compute the input statistics from the first ``ceil(f*N)`` examples of each
            batch and use them for the whole batch (paper section 6.1 uses f = 0.25); in (0, 1].
        momentum: momentum of the running estimate of the input channel means that evaluation
            mode uses (BatchNorm's convention: ``running = (1-momentum) running + momentum m``).
        detach_stats: treat the batch statistics as constants in the backward pass.
        track_running_stats: keep the running estimate; if False, evaluation uses batch statistics.

    Buffers ``running_mean`` (C_in,), initialised to 1, and ``num_batches_tracked``.
    There is no epsilon (paper section 5.2); weights are initialised He fan_out normal with
    balanced signs (:func:`balance_signs_`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        single_pass: bool = True,
        stat_fraction: float = 1.0,
        momentum: float = 0.1,
        detach_stats: bool = False,
        track_running_stats: bool = True,
    ) -> None:
        if not 0.0 < stat_fraction <= 1.0:
            raise ValueError(f"stat_fraction must be in (0, 1], got {stat_fraction}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        kh, kw = _pair(kernel_size)
        if (in_channels // groups) * kh * kw < 2:
            raise ValueError(
                "EquiConv2d needs at least two weights per output channel "
                f"(in_channels/groups * kh * kw >= 2); got {in_channels}/{groups} x {kh}x{kw}"
            )
        self.single_pass = bool(single_pass)
        self.stat_fraction = float(stat_fraction)
        self.momentum = float(momentum)
        self.detach_stats = bool(detach_stats)
        self.track_running_stats = bool(track_running_stats)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.ones(in_channels, **factory))
        self.register_buffer(
            "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
        )

    def reset_parameters(self) -> None:
        """He fan_out normal init (paper section 6.1) with balanced signs; bias zero."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.post_init_()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def post_init_(self) -> None:
        """Re-establish the balanced-sign invariant after any external re-initialisation."""
        balance_signs_(self.weight)

    def reset_running_stats(self) -> None:
        self.running_mean.fill_(1.0)
        self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, single_pass={self.single_pass}, "
            f"stat_fraction={self.stat_fraction}, momentum={self.momentum}, "
            f"detach_stats={self.detach_stats}"
        )

    def channel_means(self, x: Tensor) -> Tensor:
        """The statistics this call uses: batch means in training mode, running means in eval.

        Training mode also updates the running estimate.
        """
        if self.training or not self.track_running_stats:
            m = input_channel_means(x, self.stat_fraction)
            if self.training and self.track_running_stats:
                with torch.no_grad():
                    self.running_mean.lerp_(m.detach().to(self.running_mean.dtype), self.momentum)
                    self.num_batches_tracked.add_(1)
            return m.detach() if self.detach_stats else m
        return self.running_mean

    def normalized_weight(self, x: Tensor) -> Tensor:
        """``w''`` for input ``x`` (updates the running statistics in training mode)."""
        out_size = conv_output_size(
            x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation
        )
        factor = equi_scale_factor(x.shape[-2:], out_size, self.stride)
        return equi_weight(
            self.weight, self.channel_means(x), factor, self.single_pass, self.groups
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"EquiConv2d expects input of shape (N, {self.in_channels}, H, W); "
                f"got {tuple(x.shape)}"
            )
        return self._conv_forward(x, self.normalized_weight(x), self.bias)
