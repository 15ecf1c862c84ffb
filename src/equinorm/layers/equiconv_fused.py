"""EquiNorm's fused path: the weight transform and a whole zero-padded EquiNorm convolution as
single autograd nodes with their backward written out (``EquiConv2d(impl="fused")``, the default).

The same function as :func:`equinorm.layers.equiconv.equi_weight_reference` composed with the
convolution (the tests hold them equal, values and gradients), made fast in eager mode on a CPU:
kernel sums as matrix-vector products, few passes and allocations over the weights, the input
statistics' gradient added in place, about twenty autograd nodes per layer replaced by one. The
transform stays in float32 under any device's autocast (:func:`float32_region`). Whether it also
pays on a GPU, against ``torch.compile`` of the plain ops, is what ``scripts/bench.py
--equi-impls fused reference`` measures (docs/performance.md).

The written-out backward serves first-order gradients. A double backward (``create_graph=True``:
Hessian-vector products, gradient penalties) differentiates the plain-ops function each node is
given (its ``reference``) instead; under ``torch.func`` transforms and forward-mode AD the layer
composes the plain ops from the start (:func:`fused_supported`).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

__all__ = [
    "EquiConvFn",
    "EquiWeight",
    "float32_region",
    "fused_supported",
    "transform_backward",
    "transform_forward",
]


def fused_supported() -> bool:
    """Whether the hand-written nodes can run: not under ``torch.func`` transforms (``vmap``,
    ``grad``, ``jacrev``, ...) or forward-mode AD, which need nodes written for them
    (``setup_context``, ``jvp``). Callers compose the plain ops instead, which support both.
    It reads two private flags of torch's (the first is the one ``Function.apply`` consults);
    the tests of both cases fail if either changes."""
    if torch.compiler.is_compiling():  # traced graphs are plain first-order autograd
        return True
    return not torch._C._are_functorch_transforms_active() and forward_ad._current_level < 0


def _differentiable_grads(ctx, inputs: tuple, grad_out: Tensor) -> tuple:
    """The node's input gradients as differentiable functions of its inputs, for a backward
    with ``create_graph=True``: autograd through ``ctx.reference`` (the node's function in
    plain ops) recomputed from the saved inputs. The written-out backward's intermediates carry
    no graph, so differentiating it would silently miss every second-order term."""
    needs = ctx.needs_input_grad[: len(inputs)]
    want = [t is not None and need for t, need in zip(inputs, needs, strict=True)]
    with torch.enable_grad():
        out = ctx.reference(*inputs, *ctx.args)
        wanted = [t for t, w in zip(inputs, want, strict=True) if w]
        grads = iter(
            torch.autograd.grad(out, wanted, grad_out, create_graph=True, allow_unused=True)
        )
    return tuple(next(grads) if w else None for w in want)


def float32_region(device_type: str):
    """Autocast off for ``device_type``: EquiNorm's statistics and weight transform stay float32.

    Autocast policies differ by device: CUDA casts ``mv``, ``addmv``, ``addr`` and
    ``linalg_vecdot`` to the low-precision dtype, CPU does not, so the layer cannot rely on the
    caller's policy. ``torch.amp.custom_fwd(cast_inputs=...)`` is bound to one device type at
    decoration and would also keep the convolution itself out of autocast; this region covers
    only the transform, on whatever device the tensors live.
    """
    # cpu and cuda have autocast: torch.compile of torch 2.11 cannot trace the probe (it broke the
    # graph in every layer, and fullgraph=True failed)
    if device_type in ("cpu", "cuda") or torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _in_float32(fn):
    """Run ``fn(weight_or_grad, ...)`` inside :func:`float32_region` of that tensor's device."""

    @functools.wraps(fn)
    def wrapper(tensor: Tensor, *args, **kwargs):
        with float32_region(tensor.device.type):
            return fn(tensor, *args, **kwargs)

    return wrapper


def _weighted(mat: Tensor, m_dc: Tensor) -> Tensor:
    """``sum_c m_dc mat_dc`` per output channel d (a matrix-vector product when groups == 1)."""
    if m_dc.shape[0] == 1:
        return torch.mv(mat, m_dc[0])
    return (mat * m_dc).sum(dim=1)


@_in_float32
def transform_forward(
    weight: Tensor,
    m_dc: Tensor,
    scale_factor: float,
    single_pass: bool,
    gamma: Tensor | None = None,
    eps: float = 0.0,
):
    """``w'' = s (w + b)`` and what its backward needs (no autograd; see :class:`_EquiWeight`).

    ``eps`` is added to the denominator ``D`` (0: the paper's transform). With ``gamma`` (the
    scale of a per-channel affine folded into the layer) the kernel is ``gamma s (w + b)``.
    Written for few passes over the weights, few weight-sized allocations and few small ops:
    kernel sums are matrix-vector products with a ones vector, and one buffer serves as the
    positive parts, then (``sign_``) as the sign mask.
    """
    c_out, c_in_g, kh, kw = weight.shape
    k = kh * kw
    ones = weight.new_ones(k)
    flat = weight.reshape(c_out, c_in_g * k)
    w_dc = torch.mv(flat.view(-1, k), ones).view(c_out, c_in_g)
    km = m_dc.sum(dim=1).mul_(k)  # k sum_c m_dc
    b = _weighted(w_dc, m_dc).div_(km).neg_()  # centres the output
    if single_pass:  # P = sum_jk w [w > 0] + b #{w > 0}
        mask = torch.relu(flat)
        a = torch.mv(mask.view(-1, k), ones).view(c_out, c_in_g)
        mask.sign_()
        n = torch.mv(mask.view(-1, k), ones).view(c_out, c_in_g)
        p = torch.addcmul(a, n, b.unsqueeze(1))
    else:  # P = sum_jk relu(w + b)
        mask = (flat + b.unsqueeze(1)).relu_()
        p = torch.mv(mask.view(-1, k), ones).view(c_out, c_in_g)
        mask.sign_()
        n = torch.mv(mask.view(-1, k), ones).view(c_out, c_in_g)
    d = _weighted(p, m_dc)
    if eps:
        d = d.add_(eps)
    s = d.reciprocal().mul_(scale_factor)  # positive contributions total r
    se = s if gamma is None else s * gamma  # the effective scale of each output channel
    w2 = torch.addcmul((b * se).unsqueeze(1), flat, se.unsqueeze(1)).view_as(weight)
    return w2, (weight, m_dc, mask, w_dc, b, n, p, d, s, se, km)


@_in_float32
def transform_backward(grad: Tensor, saved, need_m: bool, need_gamma: bool = False):
    """Gradients of ``w''`` with respect to ``w``, ``m_dc`` and a folded ``gamma``.

    ``dL/dw = s_e G + m_dc (alpha + g_d mask)`` per output channel, with ``s_e = gamma s`` the
    effective scale, ``alpha`` the gradient through ``b`` and ``g_d`` through ``D``; ``m_dc``
    repeated over the kernel taps keeps every broadcast along long rows.
    """
    weight, m_dc, mask, w_dc, b, n, p, d, s, se, km = saved
    c_out, c_in_g, kh, kw = weight.shape
    k = kh * kw
    g = grad.reshape(c_out, c_in_g * k)
    g_sum = g.sum(dim=1)
    g_se = torch.addcmul(torch.linalg.vecdot(g, weight.reshape(c_out, -1)), b, g_sum)
    g_gamma = g_se * s if need_gamma else None  # s_e = gamma factor / d
    g_d = (g_se * se).div_(d).neg_()  # dL/dD
    g_b = torch.addcmul(se * g_sum, g_d, _weighted(n, m_dc))  # directly, and through P
    alpha = (g_b / km).neg_()  # b = -(sum_c m_dc w_dc) / (k sum_c m_dc)
    m_rep = m_dc.repeat_interleave(k, dim=1)
    g_w = mask * g_d.unsqueeze(1)  # through P: dP/dw = m_dc mask
    g_w.add_(alpha.unsqueeze(1)).mul_(m_rep).addcmul_(g, se.unsqueeze(1))
    g_m = None
    if need_m:  # dD/dm = P; db/dm = -(w_dc + k b) / (k sum m)
        if m_dc.shape[0] == 1:
            g_m = (torch.mv(p.t(), g_d) + torch.mv(w_dc.t(), alpha)).add_(k * torch.dot(b, alpha))
            g_m = g_m.unsqueeze(0)
        else:
            g_m = g_d.unsqueeze(1) * p + alpha.unsqueeze(1) * (w_dc + k * b.unsqueeze(1))
    return g_w.view_as(weight), g_m, g_gamma


class EquiWeight(torch.autograd.Function):
    """``w'' = s (w + b)`` as one autograd node, with the backward written out.

    With ``mask`` the sign indicator (``[w > 0]`` single-pass, ``[w + b > 0]`` exact; constant
    almost everywhere), both variants read ``P_dc = A_dc + b_d N_dc`` with ``A = sum w mask`` and
    ``N = sum mask``; ``D_d = sum_c m_dc P_dc``, ``s_d = factor / D_d``. Differentiating by hand
    replaces about twenty autograd nodes per layer by one and halves the passes over the weights.
    """

    @staticmethod
    def forward(ctx, weight, m_dc, scale_factor: float, single_pass: bool, eps: float, reference):
        w2, saved = transform_forward(weight, m_dc, scale_factor, single_pass, None, eps)
        ctx.save_for_backward(*saved)
        ctx.reference, ctx.args = reference, (scale_factor, single_pass, eps)
        return w2

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True
            return _differentiable_grads(ctx, ctx.saved_tensors[:2], grad) + (None,) * 4
        g_w, g_m, _ = transform_backward(grad, ctx.saved_tensors, ctx.needs_input_grad[1])
        return g_w, g_m, None, None, None, None


_convolution_backward = torch.ops.aten.convolution_backward.default


class EquiConvFn(torch.autograd.Function):
    """A whole zero-padded EquiNorm convolution as one autograd node.

    ``m_dc`` holds the input statistics the caller computed (from the first ``n_stat`` examples,
    without autograd); with ``stats_grad`` their gradient -- a per-channel constant -- is added in
    place to the convolution's input gradient instead of being materialised by autograd and
    summed. Under autocast the convolution runs in the autocast dtype; the weight transform stays
    in float32. A folded per-channel affine enters as ``gamma`` (scaling the kernel) and ``bias``
    (its shift). ``reference`` is this function in plain ops, with the same arguments (its double
    backward).
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        gamma,
        m_dc,
        n_stat: int,
        stats_grad: bool,
        scale_factor: float,
        single_pass: bool,
        eps: float,
        stride,
        padding,
        dilation,
        groups: int,
        reference,
    ):
        w2, saved = transform_forward(weight, m_dc, scale_factor, single_pass, gamma, eps)
        device = x.device.type
        xc, wc, bc = x, w2, bias
        if torch.is_autocast_enabled(device):  # the convolution in the autocast dtype
            cast = torch.get_autocast_dtype(device)
            xc, wc = x.to(cast), w2.to(cast)
            bc = None if bias is None else bias.to(cast)
        y = F.conv2d(xc, wc, bc, stride, padding, dilation, groups)
        ctx.save_for_backward(xc, wc)
        ctx.saved = saved  # intermediates of the transform (not inputs or outputs)
        ctx.affine, ctx.reference = (bias, gamma), reference  # with saved: a double backward's
        ctx.args = (n_stat, stats_grad, scale_factor, single_pass, eps)
        ctx.args += (stride, padding, dilation, groups)
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        xc, wc = ctx.saved_tensors
        saved = ctx.saved
        n_stat, stats_grad, _, _, _, stride, padding, dilation, groups = ctx.args
        has_bias, x_dtype = ctx.affine[0] is not None, ctx.x_dtype
        if torch.is_grad_enabled():  # create_graph=True
            if xc.dtype != x_dtype:  # xc is a cast copy, not the input
                raise RuntimeError(
                    "a double backward through EquiConv2d under autocast needs its float32 "
                    "input, which the fused layer does not keep: use EquiConv2d(impl='reference')"
                    " (norm.impl=reference)"
                )
            inputs = (xc, saved[0], *ctx.affine, saved[1])  # x, weight, bias, gamma, m_dc
            return _differentiable_grads(ctx, inputs, grad_y) + (None,) * 10
        need_x, need_gamma = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        if grad_y.dtype != wc.dtype:
            grad_y = grad_y.to(wc.dtype)
        grad_x, grad_w2, grad_b = _convolution_backward(
            grad_y,
            xc,
            wc,
            [wc.shape[0]] if has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_x, True, has_bias],
        )
        weight = saved[0]
        if grad_w2.dtype != weight.dtype:
            grad_w2 = grad_w2.to(weight.dtype)
        need_m = need_x and stats_grad
        g_w, g_m, g_gamma = transform_backward(grad_w2, saved, need_m, need_gamma)
        if need_m:  # d m_c / d x = 1 / (n_stat H W) for the first n_stat examples
            if groups == 1:
                g_m = g_m[0]  # already summed over the output channels
            else:
                g_m = g_m.view(groups, -1, weight.shape[1]).sum(dim=1).reshape(-1)
            g_m = g_m.div_(n_stat * xc.shape[2] * xc.shape[3])
            grad_x[:n_stat].add_(g_m.to(grad_x.dtype).view(1, -1, 1, 1))
        if grad_x is not None and grad_x.dtype != x_dtype:
            grad_x = grad_x.to(x_dtype)
        if has_bias and grad_b.dtype != weight.dtype:
            grad_b = grad_b.to(weight.dtype)
        return (grad_x, g_w, grad_b, g_gamma) + (None,) * 11
