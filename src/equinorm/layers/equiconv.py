"""Equilibrium Normalization of convolution weights (EquiNorm; paper section 4; docs/spec.md 1).

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
transforms ``self.weight`` in ``forward`` and convolves with the result. Gradients reach the
weights through ``b`` and ``s`` and the input through the channel means, as BatchNorm's reach its
input through the batch mean.

This file holds the layer, its statistics and the transform in plain tensor ops
(:func:`equi_weight_reference`, checkable line by line against docs/spec.md section 1 and the
tests' oracle). ``impl="fused"`` (the default) runs the same function through
:mod:`equinorm.layers.equiconv_fused`: a zero-padded layer as one autograd node with its backward
written out, other padding modes composing :func:`equi_weight` (one node) with ``Conv2d``;
``impl="reference"`` composes the plain ops with the convolution and lets autograd (or
``torch.compile``) do the rest.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from equinorm.layers.equiconv_fused import (
    EquiConvFn,
    EquiWeight,
    fused_supported,
    transform_forward,
)

__all__ = [
    "IMPLS",
    "EquiConv2d",
    "balance_signs_",
    "cached_eval_kernels",
    "conv_output_size",
    "equi_denominator",
    "equi_scale_factor",
    "equi_weight",
    "equi_weight_reference",
    "fuse_equinorm",
    "input_channel_means",
]


IMPLS = ("fused", "reference")  # EquiConv2d(impl=...): see its docstring


def input_channel_means(x: Tensor, stat_fraction: float = 1.0) -> Tensor:
    """Per-input-channel mean ``m_c`` of ``x`` (N, C, H, W) over its first ``ceil(f*N)`` examples.

    Reduced-precision inputs (bf16/fp16 under autocast) are accumulated and returned in float32.
    """
    return _first_means(x, math.ceil(stat_fraction * x.shape[0]))


def _first_means(x: Tensor, n: int) -> Tensor:
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


def _group_means(channel_means: Tensor, weight: Tensor, groups: int) -> Tensor:
    """``m_dc``: the means each output channel of ``weight`` sees, in the weight's dtype;
    (1, C_in) when groups == 1, else (C_out, C_in / groups)."""
    if channel_means.dtype != weight.dtype:
        channel_means = channel_means.to(weight.dtype)
    if groups == 1:
        return channel_means.unsqueeze(0)
    c_out, c_in_g = weight.shape[:2]
    return channel_means.view(groups, c_in_g).repeat_interleave(c_out // groups, dim=0)


def equi_weight(
    weight: Tensor,
    channel_means: Tensor,
    scale_factor: float = 1.0,
    single_pass: bool = True,
    groups: int = 1,
    eps: float = 0.0,
) -> Tensor:
    """EquiNorm's weight transform: ``w'' = s (w + b)`` per output channel (docs/spec.md section 1).

    Args:
        weight: kernel ``w`` of shape (C_out, C_in / groups, kh, kw).
        channel_means: ``m_c``, the mean of the layer's input per input channel, shape (C_in,).
        scale_factor: ``H_out W_out t^2 / (H_in W_in)`` (see :func:`equi_scale_factor`); the
            positive weights' total contribution per output element then averages 1.
        single_pass: the paper's single-pass estimate of the positive sums (its experiments) if
            True, the exact two-pass form if False.
        groups: the convolution's groups; output channel ``d`` sees the input channels of its group.
        eps: added to the denominator ``D = sum_c m_c P_dc`` (0, the paper's transform: no epsilon).

    Returns:
        The normalized kernel, same shape and dtype as ``weight``. Differentiable in ``weight``
        and ``channel_means``, to any order, under ``torch.func`` transforms and forward-mode
        AD too (those through :func:`equi_weight_reference`).
    """
    if not fused_supported():
        return equi_weight_reference(weight, channel_means, scale_factor, single_pass, groups, eps)
    m_dc = _group_means(channel_means, weight, groups)
    args = (float(scale_factor), bool(single_pass), float(eps))
    return EquiWeight.apply(weight, m_dc, *args, _normalized_kernel)


@torch.no_grad()
def equi_denominator(
    weight: Tensor,
    channel_means: Tensor,
    single_pass: bool = True,
    groups: int = 1,
    eps: float = 0.0,
) -> Tensor:
    """``D_d = sum_c m_c P_dc (+ eps)`` per output channel: the scale is ``factor / D_d``, and a
    ``D_d`` at 0 is where the transform divides by zero (a diagnostic; no gradient)."""
    m_dc = _group_means(channel_means, weight, groups)
    _, p_dc = _shift_and_positive_sums(weight, m_dc, single_pass)
    return (m_dc * p_dc).sum(dim=1) + eps


def equi_weight_reference(
    weight: Tensor,
    channel_means: Tensor,
    scale_factor: float = 1.0,
    single_pass: bool = True,
    groups: int = 1,
    eps: float = 0.0,
) -> Tensor:
    """:func:`equi_weight` in plain differentiable tensor ops (autograd derives the backward).

    Kept as the readable statement of docs/spec.md section 1 and as the oracle of the tests.
    """
    m_dc = _group_means(channel_means, weight, groups)
    return _normalized_kernel(weight, m_dc, scale_factor, single_pass, eps)


def _normalized_kernel(
    weight: Tensor, m_dc: Tensor, scale_factor: float, single_pass: bool, eps: float
) -> Tensor:
    """``w'' = s (w + b)`` from the means each output channel sees (``m_dc``, see
    :func:`_group_means`)."""
    b, p_dc = _shift_and_positive_sums(weight, m_dc, single_pass)
    s = scale_factor / ((m_dc * p_dc).sum(dim=1) + eps)  # positive contributions total r
    return (weight + b.view(-1, 1, 1, 1)) * s.view(-1, 1, 1, 1)


def _conv_reference(x, weight, bias, gamma, m_dc, n_stat, stats_grad, *args) -> Tensor:
    """The fused zero-padded layer's function (:class:`EquiConvFn`, same arguments) in plain
    ops: statistics from the first ``n_stat`` examples (differentiably with ``stats_grad``, else
    ``m_dc``), the transform, a folded affine's scale, the convolution."""
    scale_factor, single_pass, eps, stride, padding, dilation, groups = args
    if stats_grad:
        m_dc = _group_means(_first_means(x, n_stat), weight, groups)
    w2 = _normalized_kernel(weight, m_dc, scale_factor, single_pass, eps)
    if gamma is not None:
        w2 = w2 * gamma.view(-1, 1, 1, 1)
    return F.conv2d(x, w2, bias, stride, padding, dilation, groups)


def _shift_and_positive_sums(weight: Tensor, m_dc: Tensor, single_pass: bool):
    """``b_d`` (centres the output) and ``P_dc`` (the positive weights' sums, exact or
    single-pass), docs/spec.md section 1."""
    k = weight.shape[2] * weight.shape[3]
    w_dc = weight.sum(dim=(2, 3))  # (C_out, C_in_g)
    b = -(m_dc * w_dc).sum(dim=1) / (k * m_dc.sum(dim=1))
    if single_pass:
        positive = weight > 0
        p_dc = (weight * positive).sum(dim=(2, 3)) + b.unsqueeze(1) * positive.sum(dim=(2, 3))
    else:
        p_dc = (weight + b.view(-1, 1, 1, 1)).clamp(min=0).sum(dim=(2, 3))
    return b, p_dc


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
            mode uses (BatchNorm's convention: ``running = (1-momentum) running + momentum m``;
            None, as BatchNorm: the average of every batch's means since the last reset).
        detach_stats: treat the batch statistics as constants in the backward pass.
        track_running_stats: keep the running estimate; if False, evaluation uses batch statistics.
        eps: added to the denominator ``D = sum_c m_c P_dc``. The paper has none (section 5.2) and
            neither has the default: balanced signs keep ``D`` from zero at initialisation but
            not through training (an output channel whose positive weights all meet dead input
            channels has ``D = 0``); a small ``eps`` makes such a layer finite.
        impl: ``fused`` (default) runs a zero-padded layer as one autograd node with its backward
            written out (fast in eager mode on a CPU); ``reference`` composes
            :func:`equi_weight_reference` (plain tensor ops, autograd's backward) with the
            convolution -- the same function, for benchmarks (``torch.compile`` fuses plain ops
            itself) and as a check.

    Buffers ``running_mean`` (C_in,), initialised to 1, and ``num_batches_tracked``.
    Weights are initialised He fan_out normal with
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
        momentum: float | None = 0.1,
        detach_stats: bool = False,
        track_running_stats: bool = True,
        eps: float = 0.0,
        impl: str = "fused",
    ) -> None:
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        if not 0.0 < stat_fraction <= 1.0:
            raise ValueError(f"stat_fraction must be in (0, 1], got {stat_fraction}")
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1] or None, got {momentum}")
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        kh, kw = _pair(kernel_size)
        if (in_channels // groups) * kh * kw < 2:
            raise ValueError(
                "EquiConv2d needs at least two weights per output channel "
                f"(in_channels/groups * kh * kw >= 2); got {in_channels}/{groups} x {kh}x{kw}"
            )
        self.single_pass = bool(single_pass)
        self.stat_fraction = float(stat_fraction)
        self.momentum = None if momentum is None else float(momentum)
        self.detach_stats = bool(detach_stats)
        self.eps = float(eps)
        self.impl = impl
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
        """He fan_out normal init (paper section 6.1) with balanced signs; bias zero; running
        means reset (as BatchNorm's ``reset_parameters``)."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.post_init_()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if hasattr(self, "running_mean"):  # Conv2d's constructor calls this before they exist
            self.reset_running_stats()

    def post_init_(self) -> None:
        """Re-establish the balanced-sign invariant after any external re-initialisation."""
        balance_signs_(self.weight)

    @property
    def folded_affine(self) -> nn.Module | None:
        """The per-channel affine folded into this layer (see :meth:`fold_affine`), if any."""
        return self.__dict__.get("_folded_affine")

    def fold_affine(self, affine: nn.Module) -> None:
        """Apply ``affine`` (a per-channel ``y = weight x + bias`` right after this layer) inside
        this layer: the kernel is scaled by its weight and its bias becomes the convolution's.

        The affine keeps its parameters (so state_dicts do not change) and turns into the
        identity; this layer holds a plain reference to it, not a submodule.
        """
        if self.bias is not None:
            raise ValueError("fold_affine needs a convolution without its own bias")
        if affine.weight.shape != (self.out_channels,):
            raise ValueError(
                f"cannot fold an affine of {tuple(affine.weight.shape)} channels "
                f"into a convolution with {self.out_channels} outputs"
            )
        self.__dict__["_folded_affine"] = affine
        affine.folded = True

    @torch.no_grad()
    def eval_weight(self, scale_factor: float, gamma: Tensor | None = None) -> Tensor:
        """The kernel from the running means.

        Inside :func:`cached_eval_kernels` it is computed once and reused until the weights, the
        running means or a folded affine change in place (version counters tell) or the geometry
        does; elsewhere it is computed at every call, so writes that version counters cannot see
        (through ``.data``: EMA, SWA, user code) are never missed.
        """
        if not self.__dict__.get("_eval_cache_on", False):
            return self._eval_transform(scale_factor, gamma)
        tensors = [self.weight, self.running_mean] + ([] if gamma is None else [gamma])
        key = (scale_factor, *((t.data_ptr(), t._version) for t in tensors))
        cached = self.__dict__.get("_eval_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        w2 = self._eval_transform(scale_factor, gamma)
        self.__dict__["_eval_cache"] = (key, w2)
        return w2

    def _eval_transform(self, scale_factor: float, gamma: Tensor | None) -> Tensor:
        m_dc = _group_means(self.running_mean, self.weight, self.groups)
        return transform_forward(
            self.weight, m_dc, scale_factor, self.single_pass, gamma, self.eps
        )[0]

    @torch.no_grad()
    def fuse(self, input_size: Sequence[int] | None = None) -> nn.Conv2d:
        """This layer as it evaluates, a plain :class:`~torch.nn.Conv2d` (timm's ``fuse``
        convention): in eval the kernel depends only on the weights and the running means, so it
        folds exactly, a folded affine included. The kernel is linear in the input-size factor
        ``H_out W_out t^2 / (H_in W_in)``: exact for inputs of ``input_size`` (H, W), or with None
        where that factor is 1 (even sizes and same-style padding: every layer of the paper's
        networks on their datasets)."""
        if not self.track_running_stats:
            raise ValueError("fuse needs running statistics (track_running_stats=True)")
        factor = 1.0 if input_size is None else self._size_factor(input_size)
        gamma, bias = self._gamma_bias()
        if self._composed:
            kernel = self._transform(self.running_mean, factor)
            kernel = kernel if gamma is None else kernel * gamma.view(-1, 1, 1, 1)
        else:
            kernel = self._eval_transform(factor, gamma)
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias=bias is not None,
            padding_mode=self.padding_mode,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight.copy_(kernel)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv.train(self.training)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        """A plain ``Conv2d``'s entry (weight and bias, none of this layer's buffers) loads
        strictly: the running means keep their value (BatchNorm's way with an old checkpoint's
        missing ``num_batches_tracked``); calibrate them (:func:`equinorm.layers.calibrate`)."""
        buffers = [prefix + "running_mean", prefix + "num_batches_tracked"]
        if prefix + "weight" in state_dict and not any(k in state_dict for k in buffers):
            state_dict.update({prefix + "running_mean": self.running_mean.clone()})
            state_dict.update({prefix + "num_batches_tracked": self.num_batches_tracked.clone()})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

    def reset_running_stats(self) -> None:
        self.running_mean.fill_(1.0)
        self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, single_pass={self.single_pass}, "
            f"stat_fraction={self.stat_fraction}, momentum={self.momentum}, "
            f"detach_stats={self.detach_stats}"
            + (f", eps={self.eps}" if self.eps else "")
            + (f", impl={self.impl}" if self.impl != "fused" else "")
            + (", affine folded in" if self.folded_affine is not None else "")
        )

    def channel_means(self, x: Tensor) -> Tensor:
        """The statistics this call uses: batch means in training mode, running means in eval.

        Training mode also updates the running estimate.
        """
        if self._batch_stats(x):
            m = input_channel_means(x, self.stat_fraction)
            self._track(m)
            return m.detach() if self.detach_stats else m
        return self.running_mean

    def _batch_stats(self, x: Tensor) -> bool:
        """Whether ``x`` is normalized with its own means: in training mode (or without running
        statistics), unless the batch is empty -- it has no means, and its output is empty."""
        return (self.training or not self.track_running_stats) and x.shape[0] > 0

    @torch.no_grad()
    def _track(self, means: Tensor) -> None:
        """Update the running estimate with a training batch's means."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            weight = self.momentum or 1.0 / float(self.num_batches_tracked)  # None: the average
            self.running_mean.lerp_(means.detach().to(self.running_mean.dtype), weight)

    def scale_factor(self, x: Tensor) -> float:
        """``H_out W_out t^2 / (H_in W_in)`` for input ``x`` (see :func:`equi_scale_factor`)."""
        return self._size_factor(x.shape[-2:])

    def _size_factor(self, size: Sequence[int]) -> float:
        out = conv_output_size(size, self.kernel_size, self.stride, self.padding, self.dilation)
        return equi_scale_factor(tuple(size), out, self.stride)

    def normalized_weight(self, x: Tensor) -> Tensor:
        """``w''`` for input ``x`` (updates the running statistics in training mode)."""
        return self._transform(self.channel_means(x), self.scale_factor(x))

    def _transform(self, means: Tensor, factor: float) -> Tensor:
        transform = equi_weight_reference if self.impl == "reference" else equi_weight
        return transform(self.weight, means, factor, self.single_pass, self.groups, self.eps)

    def _gamma_bias(self) -> tuple[Tensor | None, Tensor | None]:
        """The kernel's scale and the output's bias: a folded affine's, else (None, bias)."""
        affine = self.folded_affine
        return (None, self.bias) if affine is None else (affine.weight, affine.bias)

    @property
    def _composed(self) -> bool:
        """Whether the transform is composed with Conv2d (else one fused autograd node)."""
        zeros = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        return self.impl == "reference" or not zeros or not fused_supported()

    def forward(self, x: Tensor) -> Tensor:
        return _equi_conv2d(self, x)

    def _forward(self, x: Tensor) -> Tensor:
        tracing = torch.jit.is_tracing()  # shapes are traced values: the check would be constant
        if not tracing and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(
                f"EquiConv2d expects input of shape (N, {self.in_channels}, H, W); "
                f"got {tuple(x.shape)}"
            )
        gamma, bias = self._gamma_bias()
        if self._composed:
            w2 = self.normalized_weight(x)
            if gamma is not None:
                w2 = w2 * gamma.view(-1, 1, 1, 1)
            return self._conv_forward(x, w2, bias)
        return self.fused_forward(x, gamma, bias)

    def fused_forward(self, x: Tensor, gamma: Tensor | None = None, bias: Tensor | None = None):
        """The zero-padded layer as one autograd node (same result as the composed path)."""
        factor = self.scale_factor(x)
        batch_stats = self._batch_stats(x)
        direct = not torch.is_grad_enabled() or torch.jit.is_tracing()  # one graph for jit.trace
        if not batch_stats and direct and not torch.compiler.is_compiling():
            # evaluation: the kernel depends only on the weights and the running means, which
            # do not change between batches -- transform once, reuse until one of them changes
            return F.conv2d(
                x,
                self.eval_weight(factor, gamma),
                bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
        n_stat = math.ceil(self.stat_fraction * x.shape[0])
        with torch.no_grad():  # the node adds the statistics' gradient itself
            means = _first_means(x, n_stat) if batch_stats else self.running_mean
            m_dc = _group_means(means, self.weight, self.groups)
        y = EquiConvFn.apply(
            x,
            self.weight,
            bias,
            gamma,
            m_dc,
            n_stat,
            batch_stats and not self.detach_stats,
            factor,
            self.single_pass,
            self.eps,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            _conv_reference,
        )
        if batch_stats:
            self._track(means)
        return y


@torch.fx.wrap
def _equi_conv2d(layer: EquiConv2d, x: Tensor) -> Tensor:
    """EquiConv2d's forward. One node for ``torch.fx`` symbolic tracing (torchvision's and timm's
    feature extractors), which cannot enter its shape checks and batch statistics."""
    return layer._forward(x)


@torch.no_grad()
def fuse_equinorm(model: nn.Module, example: Tensor | None = None) -> int:
    """Replace every EquiConv2d of ``model`` by its :meth:`EquiConv2d.fuse` plain convolution, in
    place, for inference or export (evaluation results unchanged); returns how many. With an
    ``example`` input, each layer folds for the input size it sees on it (one forward in eval)."""
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def seen(module: nn.Module, args: tuple) -> None:
        sizes.setdefault(module, tuple(args[0].shape[-2:]))

    if example is not None:
        layers = [m for m in model.modules() if isinstance(m, EquiConv2d)]
        hooks = [m.register_forward_pre_hook(seen) for m in layers]
        training = model.training
        try:
            model.eval()(example)
        finally:
            model.train(training)
            for h in hooks:
                h.remove()
    fused = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, EquiConv2d):
                setattr(parent, name, child.fuse(sizes.get(child)))
                fused += 1
    return fused


@contextlib.contextmanager
def cached_eval_kernels(model: nn.Module):
    """Within this block, evaluation-mode EquiNorm layers of ``model`` transform their kernel once
    and reuse it for every batch (an evaluation pass: the weights and running means are fixed).

    The caches are dropped on exit, so a write between two evaluations -- even one through
    ``.data`` that no version counter sees -- is always picked up. Do not write the weights
    through ``.data`` inside the block.
    """
    layers = [m for m in model.modules() if isinstance(m, EquiConv2d)]
    for m in layers:
        m.__dict__["_eval_cache_on"] = True
    try:
        yield model
    finally:
        for m in layers:
            m.__dict__["_eval_cache_on"] = False
            m.__dict__.pop("_eval_cache", None)
