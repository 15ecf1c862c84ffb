"""The normalization seam: every name builds a working (conv_layer, norm_layer) pair."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equinorm.layers import NORMS, ChannelAffine, EquiConv2d, get_norm
from equinorm.layers.affine import GroupNorm, MeanOnlyBatchNorm2d, group_fallbacks
from equinorm.layers.peers import StdConv2d, WNConv2d
from equinorm.train.run import run
from tests.conftest import compose_cfg, run_dir_of

EXPECTED = {
    "equi": (EquiConv2d, ChannelAffine, False),
    "bn": (nn.Conv2d, nn.BatchNorm2d, True),
    "gn": (nn.Conv2d, GroupNorm, True),
    "ws_gn": (StdConv2d, GroupNorm, True),
    "wn": (WNConv2d, MeanOnlyBatchNorm2d, True),
    "none": (nn.Conv2d, nn.Identity, True),
}


def test_registry_holds_exactly_the_documented_names():
    assert set(NORMS) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_norm_builds_runs_forward_and_backward(name):
    spec = get_norm(name)
    conv_cls, norm_cls, standardize = EXPECTED[name]
    conv = spec.conv_layer(8, 64, 3, stride=2, padding=1)
    norm = spec.norm_layer(64)
    assert type(conv) is conv_cls and type(norm) is norm_cls
    assert conv.bias is None
    assert spec.standardize_input is standardize
    x = torch.rand(4, 8, 9, 9, requires_grad=True)
    y = torch.relu(norm(conv(x)))
    assert y.shape == (4, 64, 5, 5)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in list(conv.parameters()) + list(norm.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_unknown_norm_lists_valid_names():
    with pytest.raises(KeyError, match="valid norms: equi, bn, gn, ws_gn, wn, none"):
        get_norm("batchnorm")


def test_unknown_option_lists_valid_options():
    with pytest.raises(TypeError, match="valid options: single_pass, stat_fraction"):
        get_norm("equi", stat_fration=0.25)


def test_options_reach_the_layers():
    conv = get_norm("equi", stat_fraction=0.25, single_pass=False).conv_layer(4, 4, 3)
    assert conv.stat_fraction == 0.25 and conv.single_pass is False
    assert get_norm("gn", groups=8).norm_layer(64).num_groups == 8


def test_groupnorm_falls_back_to_a_divisor_for_narrow_layers():
    assert GroupNorm(64).num_groups == 32
    assert GroupNorm(24).num_groups == 8


def test_a_fallback_to_fewer_groups_than_the_channels_allow_is_said():
    narrow = nn.Sequential(GroupNorm(16), GroupNorm(64))  # the demo's 16 channels: 16 groups
    assert group_fallbacks(narrow) == ""
    net = nn.Sequential(GroupNorm(48), GroupNorm(96), GroupNorm(48, num_groups=3), GroupNorm(64, 3))
    assert group_fallbacks(net) == (
        "16 of 32 groups at 48 channels (1 layer), 1 of 3 groups at 64 channels (1 layer)"
    )


def test_a_run_whose_groups_divide_no_width_says_so(tmp_path):
    args = ("experiment=digits_demo", "debug=smoke", "norm=gn", "norm.groups=3")
    cfg = compose_cfg(*args, results=tmp_path)
    assert run(cfg)["status"] == "complete"
    log = (run_dir_of(cfg) / "train.log").read_text()
    assert "norm.groups does not divide every GroupNorm layer's channels" in log
    assert "1 of 3 groups at 32 channels" in log


def test_weight_standardization_gives_zero_mean_unit_variance_kernels():
    conv = StdConv2d(4, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(5).add_(2)
    w = conv.standardized_weight()
    torch.testing.assert_close(w.mean(dim=(1, 2, 3)), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        w.var(dim=(1, 2, 3), unbiased=False), torch.ones(6), atol=1e-4, rtol=0
    )


def test_weight_norm_starts_equal_to_v_and_is_scale_invariant_in_v():
    conv = WNConv2d(4, 6, 3, bias=False)
    torch.testing.assert_close(conv.normalized_weight(), conv.weight)
    before = conv.normalized_weight().detach()
    with torch.no_grad():
        conv.weight.mul_(7.0)
    torch.testing.assert_close(conv.normalized_weight(), before)


def test_mean_only_batchnorm_centres_in_training_and_uses_running_mean_in_eval():
    norm = MeanOnlyBatchNorm2d(3, momentum=1.0)
    x = torch.randn(8, 3, 4, 4) * 2 + 5
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)))  # no variance division
    norm.eval()
    torch.testing.assert_close(norm(x[:1]), x[:1] - x.mean(dim=(0, 2, 3)).view(1, 3, 1, 1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: EquiConv2d(3, 4, 3, padding=1),
        lambda: EquiConv2d(3, 4, 3, padding=1, impl="reference"),
        lambda: MeanOnlyBatchNorm2d(3),
    ],
    ids=["equi-fused", "equi-reference", "mean-only-bn"],
)
def test_an_empty_training_batch_leaves_the_running_means_as_they_were(make):
    # BatchNorm's way: an empty batch (a detector's batch of no proposals) has no means to track
    layer = make()
    layer(torch.rand(2, 3, 6, 6, requires_grad=True)).sum().backward()
    before = layer.running_mean.clone()
    y = layer(torch.rand(0, 3, 6, 6, requires_grad=True))
    y.sum().backward()
    assert y.shape[0] == 0
    torch.testing.assert_close(layer.running_mean, before)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert torch.isfinite(layer.eval()(torch.rand(2, 3, 6, 6))).all()


def test_channel_affine_is_exact_under_older_torchs_batch_norm_rule(monkeypatch):
    """torch 2.11 (the GPU image's) refuses batch_norm's eps 0 even in evaluation: every
    EquiNorm pre-activation network failed its first step there."""
    from torch.nn import functional as F

    original = F.batch_norm

    def batch_norm(*args, **kwargs):
        eps = args[7] if len(args) > 7 else kwargs.get("eps", 1e-5)
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive, but got {eps}")
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "batch_norm", batch_norm)
    affine = ChannelAffine(3)
    with torch.no_grad():
        affine.weight.copy_(torch.tensor([0.5, -2.0, 3.0]))
        affine.bias.copy_(torch.tensor([1.0, 0.0, -0.25]))
    for dtype in (torch.float32, torch.float64):
        layer = affine.to(dtype)
        x = torch.randn(2, 3, 4, 4, dtype=dtype)
        zero, one = torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)
        exact = original(x, zero, one, layer.weight, layer.bias, False, 0.0, 0.0)  # this torch's
        torch.testing.assert_close(layer(x), exact, rtol=0, atol=0)  # bit for bit: the demo's
        affine_map = x * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(layer(x), affine_map)  # up to the kernel's rounding
