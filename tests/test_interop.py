"""Issue 25 (items 3, 4): EquiConv2d in other libraries' models and tools, each tested against the
real library -- timm's conv_layer protocol and reparameterize_model, torch.fx and torchvision's
feature extractor, torch.jit.trace, strict loads of plain checkpoints, converting and
calibrating a torchvision net, and the fold through ONNX + onnxruntime."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from equinorm.layers import (
    EquiConv2d,
    TimmEquiConv2d,
    calibrate,
    convert_to_equinorm,
    fuse_equinorm,
    get_norm,
)
from equinorm.models import build_model


def _trained_equinorm_net() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("preact_resnet18", get_norm("equi"), 10, in_channels=1, width_mult=0.25)
    with torch.no_grad():
        for _ in range(3):  # running means away from their initial ones
            model(torch.rand(16, 1, 8, 8))
    return model.eval()


def test_timm_builds_and_trains_a_resnetv2_with_equinorm_convolutions():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnetv2_18", conv_layer=TimmEquiConv2d, num_classes=10)
    convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != "head.fc"]
    assert len(convs) == 20 and all(isinstance(m, EquiConv2d) for m in convs)  # not timm's head
    assert all(m.bias is None for m in convs)  # timm's conv_layer convention
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in convs)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses


def test_timm_reparameterize_model_folds_every_layer_exactly():
    timm = pytest.importorskip("timm")
    model = _trained_equinorm_net()
    x = torch.rand(4, 1, 8, 8)
    folded = timm.utils.reparameterize_model(model)
    assert not any(isinstance(m, EquiConv2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-6)


def test_fx_and_torchvision_feature_extraction_need_no_extra_arguments():
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _trained_equinorm_net()
    x = torch.rand(4, 1, 8, 8)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    features = create_feature_extractor(model, return_nodes={"stages.1": "s1"})(x)
    expected = model.stages[1](model.stages[0](model.forward_stem(x)))
    torch.testing.assert_close(features["s1"], expected, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # shape checks read as constants
def test_jit_trace_in_eval_mode_generalises_to_other_inputs():
    model = _trained_equinorm_net()
    with pytest.warns(FutureWarning):  # torch.jit is deprecated; trace still must be right
        traced = torch.jit.trace(model, torch.rand(4, 1, 8, 8))
    other = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(traced(other), model(other), rtol=1e-5, atol=1e-6)


def test_a_plain_conv_checkpoint_loads_strictly_and_an_equinorm_one_stays_strict():
    plain, layer = nn.Conv2d(3, 8, 3, padding=1), EquiConv2d(3, 8, 3, padding=1)
    means = layer.running_mean.clone().fill_(0.25)
    layer.running_mean.copy_(means)
    assert not layer.load_state_dict(plain.state_dict()).missing_keys
    assert torch.equal(layer.weight, plain.weight) and torch.equal(layer.running_mean, means)
    broken = {k: v for k, v in layer.state_dict().items() if k != f"{'running_mean'}"}
    with pytest.raises(RuntimeError, match="running_mean"):  # a damaged EquiNorm checkpoint
        EquiConv2d(3, 8, 3, padding=1).load_state_dict(broken)


def test_convert_swaps_plain_convolutions_and_calibrates_only_their_means():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    plain = {n: m.weight.clone() for n, m in net.named_modules() if type(m) is nn.Conv2d}
    bn_before = net.bn1.running_mean.clone()
    batches = [torch.rand(4, 3, 32, 32) * (i + 1) for i in range(3)]
    assert convert_to_equinorm(net, calibrate_on=batches, batches=3) == len(plain) == 20
    layers = dict(net.named_modules())
    for name, weight in plain.items():
        w = layers[name].weight
        assert isinstance(layers[name], EquiConv2d) and w.shape == weight.shape
        assert torch.equal(w.abs(), weight.abs())  # copied; at most signs balanced
    first = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(net.conv1.running_mean, first)  # the mean of the batch means
    assert torch.equal(net.bn1.running_mean, bn_before)  # calibration touches only EquiNorm
    assert not net.training and not net.conv1.training  # modes restored
    assert net.conv1.momentum == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pixels in [0, 1]: nothing to say
        assert calibrate(net, iter(batches), batches=2) == 2
    expected = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches[:2]]).mean(0)
    torch.testing.assert_close(net.conv1.running_mean, expected)
    # standardized images (torchvision's recipe) into a converted stem: an EquiConv2d's output
    # std was 871 on zero-mean inputs where [0, 1] pixels give 0.3, and nothing said so
    standardized = [torch.randn(4, 3, 32, 32) - 0.5 for _ in range(2)]
    with pytest.warns(UserWarning, match=r"channel means below 0 \(conv1\).*\[0, 1\] pixels"):
        calibrate(net, standardized, batches=2)


def test_convert_where_picks_the_convolutions_by_qualified_name():
    """``where(name, conv)`` converts only what it accepts, given the names ``named_modules``
    gives (RegNet's squeeze-excitation convs see all-zero channels after ReLU and 1x1 pooling:
    EquiNorm's denominator is zero there)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.regnet_y_400mf(num_classes=10)
    plain = {n for n, m in net.named_modules() if type(m) is nn.Conv2d}
    seen = []

    def where(name, conv):
        seen.append(name)
        assert type(conv) is nn.Conv2d
        return ".se." not in name

    kept = {n for n in plain if ".se." in n}
    assert kept and convert_to_equinorm(net, where=where) == len(plain) - len(kept)
    assert sorted(seen) == sorted(plain)
    layers = dict(net.named_modules())
    assert all(isinstance(layers[n], EquiConv2d) != (n in kept) for n in plain)
    x = torch.rand(2, 3, 64, 64)
    assert net.train()(x).isfinite().all() and net.eval()(x).isfinite().all()


def test_the_fold_exports_to_onnx_with_standard_operators_only():
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = _trained_equinorm_net()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    assert fuse_equinorm(model, x) > 0
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    proto = program.model_proto
    assert {node.domain or "ai.onnx" for node in proto.graph.node} == {"ai.onnx"}
    assert "Conv" in {node.op_type for node in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(out - expected).max() < 1e-5
