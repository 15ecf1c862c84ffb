"""EquiConv2d against docs/spec.md section 1: the equilibrium identities, invariances, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from equinorm.layers import (
    EquiConv2d,
    balance_signs_,
    cached_eval_kernels,
    equi_weight,
    equi_weight_reference,
)

PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


def reference_weight(w, x, stride, out_hw, single_pass):
    """docs/spec.md section 1 with the batch sums v_c and r (the layer uses per-element means)."""
    n = x.shape[0]
    v = x.sum(dim=(0, 2, 3))  # v_c
    r = n * out_hw[0] * out_hw[1] * stride[0] * stride[1]
    k = w.shape[2] * w.shape[3]
    c_out = w.shape[0]
    w_dc = w.sum(dim=(2, 3))
    b = torch.stack([-(v * w_dc[d]).sum() / (k * v.sum()) for d in range(c_out)])
    out = torch.empty_like(w)
    for d in range(c_out):
        shifted = w[d] + b[d]
        if single_pass:
            pos = w[d] > 0
            p = (w[d] * pos).sum(dim=(1, 2)) + b[d] * pos.sum(dim=(1, 2))
        else:
            p = (shifted * (shifted > 0)).sum(dim=(1, 2))
        out[d] = r / (v * p).sum() * shifted
    return out


def reference_conv(x, weight, stride, padding, mode, dilation=1):
    if mode == "zeros":
        return F.conv2d(x, weight, None, stride, padding, dilation)
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)
    return F.conv2d(padded, weight, None, stride, 0, dilation)


def contributions(conv, x):
    """Total output of the positive and of the negative normalized weights, per output channel."""
    w2 = conv.normalized_weight(x)
    pos = conv._conv_forward(x, w2.clamp(min=0), None).sum(dim=(0, 2, 3))
    neg = conv._conv_forward(x, w2.clamp(max=0), None).sum(dim=(0, 2, 3))
    return pos, neg


shapes = st.tuples(
    st.integers(1, 5),  # N
    st.integers(1, 6),  # C_in
    st.integers(1, 6),  # C_out
    st.sampled_from([1, 3, 5]),  # kernel
    st.integers(5, 9),  # H
    st.integers(5, 9),  # W
    st.sampled_from([1, 2]),  # dilation
)


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1))
def test_equilibrium_identities_exact_circular(shape, seed):
    n, c_in, c_out, k, h, w, dil = shape
    if c_in * k * k < 2:
        c_in = 2
    torch.manual_seed(seed)
    conv = EquiConv2d(
        c_in,
        c_out,
        k,
        padding=dil * (k - 1) // 2,
        dilation=dil,
        padding_mode="circular",
        bias=False,
        single_pass=False,
    ).double()
    x = torch.rand(n, c_in, h, w, dtype=torch.float64) + 0.01
    y = conv(x)
    r = n * y.shape[2] * y.shape[3]
    pos, neg = contributions(conv, x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(c_out, dtype=torch.float64))
    torch.testing.assert_close(pos, torch.full_like(pos, r))
    torch.testing.assert_close(neg, torch.full_like(neg, -r))


def test_figure1_three_by_three():
    torch.manual_seed(0)
    conv = EquiConv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False, single_pass=False)
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    conv = conv.double()
    pos, neg = contributions(conv, x)
    assert pos.item() == pytest.approx(9.0, abs=1e-12)
    assert neg.item() == pytest.approx(-9.0, abs=1e-12)


def test_identities_are_only_approximate_with_zero_padding_or_stride():
    torch.manual_seed(1)
    x = torch.rand(2, 4, 8, 8, dtype=torch.float64)
    for kw in (
        {"padding": 1, "padding_mode": "zeros"},
        {"padding": 1, "stride": 2, "padding_mode": "circular"},
    ):
        conv = EquiConv2d(4, 3, 3, bias=False, single_pass=False, **kw).double()
        pos, _ = contributions(conv, x)
        r = 2 * 8 * 8 if kw.get("stride", 1) == 1 else 2 * 4 * 4
        assert not torch.allclose(pos, torch.full_like(pos, r), rtol=1e-6)
        torch.testing.assert_close(pos, torch.full_like(pos, r), rtol=0.5, atol=0)


@pytest.mark.parametrize("single_pass", [True, False])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("stat_fraction", [1.0, 0.25])
def test_training_output_equals_conv_with_spec_weight(single_pass, stride, mode, stat_fraction):
    torch.manual_seed(stride + 7 * single_pass)
    conv = EquiConv2d(
        3,
        5,
        3,
        stride=stride,
        padding=1,
        padding_mode=mode,
        bias=False,
        single_pass=single_pass,
        stat_fraction=stat_fraction,
    ).double()
    x = torch.rand(8, 3, 11, 10, dtype=torch.float64)
    y = conv(x)
    n_stat = math.ceil(stat_fraction * x.shape[0])
    w2 = reference_weight(conv.weight.detach(), x[:n_stat], conv.stride, y.shape[2:], single_pass)
    torch.testing.assert_close(y, reference_conv(x, w2, stride, 1, mode))


def test_output_with_bias_groups_and_dilation_matches_reference():
    torch.manual_seed(3)
    conv = EquiConv2d(6, 4, 3, padding=2, dilation=2, groups=2, bias=True).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.rand(3, 6, 9, 9, dtype=torch.float64)
    y = conv(x)
    parts = []
    for g in range(2):
        w_g = conv.weight.detach()[2 * g : 2 * g + 2]
        x_g = x[:, 3 * g : 3 * g + 3]
        w2 = reference_weight(w_g, x_g, (1, 1), y.shape[2:], True)
        parts.append(F.conv2d(x_g, w2, None, 1, 2, 2))
    expected = torch.cat(parts, dim=1) + conv.bias.detach().view(1, -1, 1, 1)
    torch.testing.assert_close(y, expected)


@settings(max_examples=20, deadline=None)
@given(
    st.floats(0.01, 100.0),
    st.floats(0.01, 100.0),
    st.booleans(),
    st.sampled_from(PADDING_MODES),
    st.sampled_from([1, 2]),
)
def test_output_invariant_to_positive_scaling(w_scale, x_scale, single_pass, mode, stride):
    torch.manual_seed(0)
    conv = EquiConv2d(
        4, 6, 3, stride=stride, padding=1, padding_mode=mode, bias=False, single_pass=single_pass
    ).double()
    x = torch.rand(3, 4, 7, 7, dtype=torch.float64)
    y = conv(x)
    with torch.no_grad():
        conv.weight.mul_(w_scale)
    torch.testing.assert_close(conv(x * x_scale), y)


def test_single_pass_equals_exact_when_no_sign_flips():
    torch.manual_seed(5)
    # |w| in [1, 2] with both signs: the shift b is a weighted mean of w, |b| < 1, so no flips.
    mag = torch.rand(4, 3, 3, 3, dtype=torch.float64) + 1.0
    sign = torch.where(torch.rand(4, 3, 3, 3) < 0.5, -1.0, 1.0).double()
    w = mag * sign
    m = torch.rand(3, dtype=torch.float64) + 0.1
    w_single = equi_weight(w, m, 1.0, single_pass=True)
    w_exact = equi_weight(w, m, 1.0, single_pass=False)
    assert torch.equal(w_single > 0, w > 0)  # the premise: adding b flipped no sign
    torch.testing.assert_close(w_single, w_exact)


def test_single_pass_differs_from_exact_when_signs_flip():
    w = torch.tensor([[[[3.0, 2.0], [1.0, -0.5]]]], dtype=torch.float64)  # b = -1.375 flips 1.0
    m = torch.ones(1, dtype=torch.float64)
    assert not torch.allclose(
        equi_weight(w, m, single_pass=True), equi_weight(w, m, single_pass=False)
    )


@pytest.mark.parametrize("single_pass", [True, False])
def test_gradcheck_weights_and_inputs(single_pass):
    torch.manual_seed(11)
    conv = EquiConv2d(2, 3, 3, stride=2, padding=1, bias=False, single_pass=single_pass).double()
    x = (torch.rand(2, 2, 5, 5, dtype=torch.float64) + 0.1).requires_grad_()
    w = conv.weight.detach().clone().requires_grad_()

    def fn(inp, weight):  # the module itself, with the weight as an explicit input
        return torch.func.functional_call(conv, {"weight": weight}, (inp,))

    assert torch.autograd.gradcheck(fn, (x, w))


def test_gradient_reaches_input_through_statistics_unless_detached():
    torch.manual_seed(2)
    x = torch.rand(4, 3, 6, 6, dtype=torch.float64)
    grads = {}
    for detach in (False, True):
        torch.manual_seed(2)
        conv = EquiConv2d(3, 4, 3, padding=1, bias=False, detach_stats=detach).double()
        xi = x.clone().requires_grad_()
        y = conv(xi)
        g = torch.randn_like(y)
        y.backward(g)
        grads[detach] = xi.grad
        if detach:  # statistics are constants: the gradient is the plain conv transpose
            w2 = conv.normalized_weight(x).detach()
            expected = torch.nn.grad.conv2d_input(x.shape, w2, g, padding=1)
            torch.testing.assert_close(xi.grad, expected)
    assert not torch.allclose(grads[False], grads[True])


def test_eval_uses_running_statistics_and_examples_are_independent():
    torch.manual_seed(4)
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False, momentum=0.3).double()
    torch.testing.assert_close(conv.running_mean, torch.ones(3, dtype=torch.float64))
    expected = torch.ones(3, dtype=torch.float64)
    for _ in range(3):
        x = torch.rand(5, 3, 6, 6, dtype=torch.float64) * 2
        conv(x)
        expected = 0.7 * expected + 0.3 * x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(conv.running_mean, expected)
    assert conv.num_batches_tracked.item() == 3

    conv.eval()
    x = torch.rand(5, 3, 6, 6, dtype=torch.float64)
    y = conv(x)
    w2 = equi_weight(conv.weight, expected, 1.0, True)
    torch.testing.assert_close(y, F.conv2d(x, w2, None, 1, 1))
    torch.testing.assert_close(conv(x[:1]), y[:1])  # one example does not depend on the others
    torch.testing.assert_close(conv.running_mean, expected)  # eval does not update
    conv.train()
    assert not torch.allclose(conv(x[:1]), conv(x)[:1])  # ...whereas training mode does


def test_stat_fraction_uses_exactly_first_examples():
    torch.manual_seed(6)
    n, f = 10, 0.25
    k = math.ceil(f * n)  # 3
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False, stat_fraction=f).double()
    x = torch.rand(n, 3, 6, 6, dtype=torch.float64)
    y = conv(x)
    expected = equi_weight(conv.weight, x[:k].mean(dim=(0, 2, 3)), 1.0, True)
    torch.testing.assert_close(conv.normalized_weight(x), expected)
    x_tail = x.clone()
    x_tail[k:] = torch.rand_like(x_tail[k:]) * 5
    torch.testing.assert_close(conv(x_tail)[:k], y[:k])
    x_in = x.clone()
    x_in[k - 1] *= 3
    assert not torch.allclose(conv(x_in)[0], y[0])


@pytest.mark.parametrize("kernel,c_in", [(3, 1), (3, 4), (1, 2), (1, 16)])
def test_balanced_initialisation_leaves_no_one_sign_slice(kernel, c_in):
    for seed in range(20):
        torch.manual_seed(seed)
        w = EquiConv2d(c_in, 32, kernel, bias=False).weight
        slices = w.flatten(2) if kernel > 1 else w.flatten(1).unsqueeze(1)
        assert ((slices > 0).any(-1) & (slices < 0).any(-1)).all()


def test_balance_signs_redraws_one_sign_slices_only():
    w = torch.randn(8, 3, 3, 3).abs()
    w[0, 0] = -w[0, 0]
    mixed = torch.randn(3, 3)
    mixed[0, 0], mixed[0, 1] = 1.0, -1.0
    w[1, 1] = mixed
    before = w.clone()
    balance_signs_(w)
    slices = w.flatten(2)
    assert ((slices > 0).any(-1) & (slices < 0).any(-1)).all()
    torch.testing.assert_close(w.abs(), before.abs())  # only signs change
    torch.testing.assert_close(w[1, 1], mixed)  # already balanced slices are untouched


def test_init_is_he_fan_out():
    torch.manual_seed(0)
    conv = EquiConv2d(64, 256, 3, bias=False)
    std = math.sqrt(2.0 / (256 * 9))
    assert conv.weight.std().item() == pytest.approx(std, rel=0.05)


def test_state_dict_round_trip():
    torch.manual_seed(8)
    a = EquiConv2d(3, 4, 3, padding=1, single_pass=False)
    a(torch.rand(4, 3, 5, 5) * 3)
    assert set(a.state_dict()) == {"weight", "bias", "running_mean", "num_batches_tracked"}
    b = EquiConv2d(3, 4, 3, padding=1, single_pass=False)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(b(x), a(x))


def test_wrong_input_shape_is_a_clear_error():
    conv = EquiConv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\); got \(2, 5, 8, 8\)"):
        conv(torch.rand(2, 5, 8, 8))
    with pytest.raises(ValueError, match="got \\(3, 8, 8\\)"):
        conv(torch.rand(3, 8, 8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"stat_fraction": 0.0}, "stat_fraction"),
        ({"stat_fraction": 1.5}, "stat_fraction"),
        ({"momentum": 0.0}, "momentum"),
    ],
)
def test_bad_arguments_fail_fast(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EquiConv2d(3, 4, 3, **kwargs)


def test_single_weight_channel_is_rejected():
    with pytest.raises(ValueError, match="two weights"):
        EquiConv2d(1, 4, 1)


def test_bf16_autocast_statistics_stay_float32():
    torch.manual_seed(0)
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.rand(2, 3, 6, 6)
    y32 = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = conv(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    assert conv.running_mean.dtype == torch.float32
    torch.testing.assert_close(y16.float(), y32, rtol=5e-2, atol=5e-2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),  # groups
    st.integers(1, 4),  # input channels per group
    st.integers(1, 3),  # output channels per group
    st.sampled_from([1, 3, 5]),  # kernel
    st.booleans(),  # single_pass
    st.floats(0.2, 3.0),  # scale factor
    st.integers(0, 2**31 - 1),
)
def test_fused_transform_matches_the_autograd_reference(groups, cin_g, cout_g, k, single, f, seed):
    from equinorm.layers import equi_weight_reference

    if cin_g * k * k < 2:
        cin_g = 2
    torch.manual_seed(seed)
    w = balance_signs_(torch.randn(cout_g * groups, cin_g, k, k, dtype=torch.float64))
    w.requires_grad_()  # balanced, as the layer initialises: no channel of one sign (assumption 4)
    m = (torch.rand(cin_g * groups, dtype=torch.float64) + 0.05).requires_grad_()
    fused = equi_weight(w, m, f, single, groups)
    ref = equi_weight_reference(w, m, f, single, groups)
    torch.testing.assert_close(fused, ref)
    g = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(fused, (w, m), g), torch.autograd.grad(ref, (w, m), g), strict=True
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("single_pass", [True, False])
def test_gradcheck_fused_transform_with_groups(single_pass):
    torch.manual_seed(12)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    m = (torch.rand(6, dtype=torch.float64) + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, m: equi_weight(w, m, 0.8, single_pass, 3), (w, m))


def test_fused_zero_padding_path_equals_the_composed_path():
    """The one-node layer (zero padding) against conv(x, w'') with autograd doing the rest."""
    torch.manual_seed(9)
    conv = EquiConv2d(4, 6, 3, stride=2, padding=1, bias=True, stat_fraction=0.5).double()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.rand(6, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 6, 5, 5, dtype=torch.float64)
    for train in (True, False):
        conv.train(train)
        fused = conv(x)
        assert fused.grad_fn.name().startswith("EquiConvFn")
        grads_f = torch.autograd.grad(fused, (x, conv.weight, conv.bias), g)
        composed = conv._conv_forward(x, conv.normalized_weight(x), conv.bias)
        grads_c = torch.autograd.grad(composed, (x, conv.weight, conv.bias), g)
        torch.testing.assert_close(fused, composed)
        for a, b in zip(grads_f, grads_c, strict=True):
            torch.testing.assert_close(a, b)


def test_folded_affine_gradcheck_and_equality():
    from equinorm.layers import ChannelAffine

    torch.manual_seed(10)
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False).double()
    affine = ChannelAffine(4).double()
    with torch.no_grad():
        affine.weight.uniform_(0.5, 2.0)
        affine.bias.normal_()
    x = torch.rand(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    expected = affine(conv(x))
    conv.fold_affine(affine)
    assert affine.folded and conv.folded_affine is affine
    torch.testing.assert_close(affine(conv(x)), expected)
    assert list(affine.state_dict()) == ["weight", "bias"] and "_folded_affine" not in dict(
        conv.named_modules()
    )

    def fn(inp, w, gamma, beta):
        return _folded(conv, inp, w, gamma, beta)

    args = (
        x,
        conv.weight.detach().clone().requires_grad_(),
        affine.weight.detach().clone().requires_grad_(),
        affine.bias.detach().clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(fn, args)


def _folded(conv, x, w, gamma, beta):
    """The fused layer with explicit (weight, gamma, beta) inputs, for gradcheck."""
    from equinorm.layers.equiconv import _conv_reference, _first_means, _group_means
    from equinorm.layers.equiconv_fused import EquiConvFn

    with torch.no_grad():
        m_dc = _group_means(_first_means(x, x.shape[0]), w, conv.groups)
    return EquiConvFn.apply(
        x,
        w,
        beta,
        gamma,
        m_dc,
        x.shape[0],
        True,
        1.0,
        conv.single_pass,
        conv.eps,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        _conv_reference,
    )


def _twin_layers(**kwargs):
    """The same EquiConv2d (float64, same weights and bias) as the fused and the reference impl."""
    layers = {}
    for impl in ("fused", "reference"):
        torch.manual_seed(13)
        layers[impl] = EquiConv2d(3, 4, 3, padding=1, impl=impl, **kwargs).double()
        with torch.no_grad():
            layers[impl].bias.normal_()
    return layers


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_second_derivatives_through_the_fused_layer_are_the_reference_ones(padding_mode):
    """A double backward (``create_graph=True``: Hessian-vector products, gradient penalties)
    through the fused nodes equals one through the plain ops, in the input, the weights and the
    bias (the written-out backward's intermediates carry no graph: it gave wrong curvature)."""
    layers = _twin_layers(padding_mode=padding_mode, bias=True, stat_fraction=0.5)
    x = torch.rand(4, 3, 6, 6, dtype=torch.float64)
    torch.manual_seed(14)
    v = [torch.randn(4, 3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(4)]
    hvps = {}
    for impl, conv in layers.items():
        inputs = (x.clone().requires_grad_(), conv.weight, conv.bias)
        grads = torch.autograd.grad(conv(inputs[0]).pow(2).sum(), inputs, create_graph=True)
        dot = sum((g * d.double()).sum() for g, d in zip(grads, v, strict=True))
        hvps[impl] = torch.autograd.grad(dot, inputs)
    for fused, reference in zip(hvps["fused"], hvps["reference"], strict=True):
        torch.testing.assert_close(fused, reference)
    conv = _twin_layers(bias=True)["fused"]
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = conv.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda x, w: torch.func.functional_call(conv, {"weight": w}, (x,)), (x, w)
    )


def test_a_double_backward_under_autocast_names_the_reference_impl():
    conv = EquiConv2d(3, 4, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(torch.rand(2, 3, 6, 6))
    with pytest.raises(RuntimeError, match=r"impl='reference'\) \(norm.impl=reference\)"):
        torch.autograd.grad(y.float().sum(), conv.weight, create_graph=True)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_torch_func_transforms_and_forward_mode_ad_give_the_reference_values(padding_mode):
    """Per-example gradients (``vmap(grad)``), ``jacrev`` and forward-mode AD (``jvp``) through
    the fused layer: it steps aside for the plain ops, which these transforms support (they
    refused the hand-written nodes). Running statistics are off or frozen, as torch.func asks
    of BatchNorm."""
    from torch.func import functional_call, grad, jacrev, jvp, vmap

    x = torch.rand(4, 3, 6, 6, dtype=torch.float64)
    results = {}
    for impl, conv in _twin_layers(padding_mode=padding_mode, bias=True).items():
        conv.eval()
        params = {k: p.detach() for k, p in conv.named_parameters()}
        buffers = dict(conv.named_buffers())

        def loss(p, xi, conv=conv, buffers=buffers):
            return functional_call(conv, {**p, **buffers}, (xi.unsqueeze(0),)).pow(2).sum()

        per_example = vmap(grad(loss), in_dims=(None, 0))(params, x)["weight"]
        conv.train().track_running_stats = False  # batch statistics, nothing to update
        w = params["weight"]

        def forward(w, conv=conv):
            return functional_call(conv, {"weight": w}, (x,))

        jac = jacrev(forward)(w)
        out, dout = jvp(forward, (w,), (torch.ones_like(w),))
        results[impl] = (per_example, jac, out, dout)
    assert results["fused"][0].shape == (4, 4, 3, 3, 3)
    for fused, reference in zip(results["fused"], results["reference"], strict=True):
        torch.testing.assert_close(fused, reference)


def test_compiles_as_one_graph_with_mixup_hook_and_bf16():
    """torch.compile(fullgraph=True) traces EquiConv2d nets without graph breaks (GPU path)."""
    from equinorm.models import build_model
    from equinorm.train.mixup import Mixer

    torch.manual_seed(0)
    model = build_model("preact_resnet18", "equi", 10, width_mult=0.125)
    reference = build_model("preact_resnet18", "equi", 10, width_mult=0.125)
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 10
    torch.nn.functional.cross_entropy(compiled(x), y).backward()
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    mixer = Mixer()
    mixer.lam, mixer.perm = torch.tensor(0.3), torch.randperm(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(x, hook_at=1, hook=mixer).float().sum().backward()


def _eval_expected(conv, x):
    return F.conv2d(x, equi_weight(conv.weight, conv.running_mean, 1.0), None, 1, 1)


def test_eval_kernel_is_cached_within_an_evaluation_until_weights_or_running_means_change():
    torch.manual_seed(13)
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False).double()
    x = torch.rand(5, 3, 6, 6, dtype=torch.float64)
    conv(x)  # a training step's statistics
    conv.eval()
    with torch.no_grad(), cached_eval_kernels(conv):
        y1 = conv(x)
        w_first = conv.__dict__["_eval_cache"][1]
        y2 = conv(x[:2])
        assert conv.__dict__["_eval_cache"][1] is w_first  # reused
        torch.testing.assert_close(y1, _eval_expected(conv, x))
        torch.testing.assert_close(y2, _eval_expected(conv, x)[:2])
        conv.weight.mul_(1.5).add_(0.01)  # an in-place write bumps the version counter
        torch.testing.assert_close(conv(x), _eval_expected(conv, x))
    assert "_eval_cache" not in conv.__dict__  # dropped with the block
    conv.train()
    conv(x * 2)  # new running means
    conv.eval()
    with torch.no_grad(), cached_eval_kernels(conv):
        torch.testing.assert_close(conv(x), _eval_expected(conv, x))
        other = EquiConv2d(3, 4, 3, padding=1, bias=False).double()
        conv.load_state_dict(other.state_dict())
        torch.testing.assert_close(conv(x), _eval_expected(conv, x))


@pytest.mark.parametrize("target", ["weight", "running_mean"])
def test_eval_output_follows_writes_through_data_that_no_version_counter_sees(target):
    """EMA, SWA and user code write through ``.data``: evaluation must see it, between passes
    (the trainer's evaluation) and outside any pass (plain ``model.eval()`` use)."""
    torch.manual_seed(14)
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False).double()
    x = torch.rand(5, 3, 6, 6, dtype=torch.float64)
    conv(x)
    conv.eval()
    tensor = getattr(conv, target)
    with torch.no_grad():
        with cached_eval_kernels(conv):
            before = conv(x)
        version = tensor._version
        tensor.data.mul_(-1) if target == "weight" else tensor.data.mul_(torch.rand(3).double())
        assert tensor._version == version  # invisible to a key on version counters
        with cached_eval_kernels(conv):
            after = conv(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, _eval_expected(conv, x))
        stale = conv(x)
        tensor.data.add_(0.05)
        fresh = conv(x)  # no block: no cache
        assert not torch.allclose(stale, fresh)
        torch.testing.assert_close(fresh, _eval_expected(conv, x))


def _dead_channel_case():
    """Output channel 0's only positive weights meet input channel 0, whose mean is 0 (dead after
    a ReLU): D_0 = sum_c m_c P_0c = 0 although the weights have both signs (its live weights are
    equal, so the exact form's w + b is 0 there too)."""
    w = -torch.rand(2, 3, 3, 3, dtype=torch.float64) - 0.1
    w[0, 1:] = -1.0
    w[0, 0] = torch.rand(3, 3, dtype=torch.float64) + 0.1
    w[1, 1, 0, 0] = 0.5
    m = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    return w, m


@pytest.mark.parametrize("single_pass", [True, False])
def test_eps_keeps_a_zero_denominator_finite_and_zero_eps_is_the_papers_transform(single_pass):
    w, m = _dead_channel_case()
    assert not torch.isfinite(equi_weight(w, m, 1.0, single_pass)).all()  # the paper's 0/0
    w_eps = equi_weight(w, m, 1.0, single_pass, eps=1e-3)
    assert torch.isfinite(w_eps).all()
    torch.testing.assert_close(w_eps, equi_weight_reference(w, m, 1.0, single_pass, eps=1e-3))
    ok = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    balance_signs_(ok)
    m_ok = torch.rand(3, dtype=torch.float64) + 0.1
    torch.testing.assert_close(  # eps=0 changes nothing
        equi_weight(ok, m_ok, 1.0, single_pass, eps=0.0), equi_weight(ok, m_ok, 1.0, single_pass)
    )
    args = (ok.requires_grad_(), m_ok.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda a, b: equi_weight(a, b, 0.7, single_pass, eps=0.05), args
    )
    conv = EquiConv2d(3, 4, 3, padding=1, bias=False, eps=0.05).double()
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))  # the fused node with eps
    with pytest.raises(ValueError, match="eps"):
        EquiConv2d(3, 4, 3, eps=-1.0)


def test_momentum_none_averages_every_batch_as_batchnorm_does():
    """``momentum=None`` (BatchNorm's cumulative average, e.g. to recompute statistics after
    weight averaging) was a TypeError; the running means are BatchNorm's running means then."""
    conv, bn = EquiConv2d(3, 4, 3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    for i in range(3):
        x = torch.rand(5, 3, 6, 6) * (i + 1)
        conv(x), bn(x)
    torch.testing.assert_close(conv.running_mean, bn.running_mean)
    assert conv.num_batches_tracked == 3 and "momentum=None" in repr(conv)
    conv.reset_running_stats()
    conv(x)
    torch.testing.assert_close(conv.running_mean, x.mean(dim=(0, 2, 3)))
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\] or None, got 0.0"):
        EquiConv2d(3, 4, 3, momentum=0.0)


@pytest.mark.parametrize("fold", [False, True])
def test_the_reference_impl_is_the_same_layer_as_the_fused_one(fold):
    """``impl=reference`` (plain ops, autograd's backward) against the fused node: outputs, every
    gradient, the curvature along the gradient (a double backward) and the running means, in
    training and evaluation, with an affine folded in."""
    from equinorm.models import build_model

    models = {}
    for impl in ("fused", "reference"):
        torch.manual_seed(4)
        models[impl] = build_model(
            "preact_resnet18",
            "equi",
            10,
            width_mult=0.125,
            norm_options={"impl": impl, "stat_fraction": 0.5},
            fold_affine=fold,
        ).double()
    x = torch.rand(6, 3, 16, 16, dtype=torch.float64)
    out = {}
    for impl, model in models.items():
        loss = model(x).square().mean()
        params = list(model.parameters())
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hvp = torch.autograd.grad(sum(g.square().sum() for g in grads), params)
        model.eval()
        with torch.no_grad():
            out[impl] = (loss, model(x), grads + hvp, model.state_dict())
    fused, ref = out["fused"], out["reference"]
    torch.testing.assert_close(fused[0], ref[0])
    torch.testing.assert_close(fused[1], ref[1])
    for a, b in zip(fused[2], ref[2], strict=True):
        torch.testing.assert_close(a, b)
    for key in fused[3]:
        torch.testing.assert_close(fused[3][key], ref[3][key])
    with pytest.raises(ValueError, match="impl must be one of fused, reference"):
        EquiConv2d(4, 4, 3, impl="triton")
