"""A trained EquiNorm net folds into plain convolutions for inference, exactly (issue 25, item 4):
in eval the kernel depends only on the weights and the running means."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from equinorm.layers import EquiConv2d, equi_scale_factor, fuse_equinorm
from equinorm.models import build_model


def _trained(impl: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("preact_resnet18", "equi", 10, in_channels=1, width_mult=0.25)
    for m in model.modules():
        if isinstance(m, EquiConv2d):
            m.impl = impl
    with torch.no_grad():
        for _ in range(3):  # running means away from their initial ones
            model(torch.rand(16, 1, 8, 8) * 2)
    return model.eval()


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_a_folded_net_gives_the_same_logits_in_eval(impl):
    model = _trained(impl)
    x = torch.rand(32, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    layers = sum(isinstance(m, EquiConv2d) for m in model.modules())
    for example in (x[:2], None):  # the sizes seen on an example; or factor 1 (8 -> 4 -> 2)
        plain = copy.deepcopy(model)
        assert fuse_equinorm(plain, example) == layers > 10
        assert not any(isinstance(m, EquiConv2d) for m in plain.modules())
        assert sum(type(m) is nn.Conv2d for m in plain.modules()) >= layers
        with torch.no_grad():
            assert torch.equal(plain(x), expected)


def test_an_input_size_factor_other_than_one_is_folded_for_its_size():
    torch.manual_seed(1)
    conv = EquiConv2d(3, 4, 3, stride=2, padding=1, padding_mode="circular")
    conv(torch.rand(8, 3, 7, 7))  # running means
    conv.eval()
    x = torch.rand(2, 3, 7, 7)
    with torch.no_grad():
        assert torch.allclose(conv.fuse((7, 7))(x), conv(x), atol=1e-6)
        factor = equi_scale_factor((7, 7), (4, 4), (2, 2))
        assert factor != 1.0
        ratio = conv.fuse((7, 7)).weight / conv.fuse().weight
        assert torch.allclose(ratio, torch.full_like(ratio, factor))
    with pytest.raises(ValueError, match="running statistics"):
        EquiConv2d(3, 4, 3, track_running_stats=False).fuse()


def test_a_folded_net_exports_as_standard_ops():
    model = _trained("fused")
    fuse_equinorm(model)
    x = torch.rand(4, 1, 8, 8)
    program = torch.export.export(model, (x,))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("conv2d" in op or "convolution" in op for op in ops)
    assert all(op.startswith("aten.") for op in ops), ops  # no custom autograd function left
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x))
