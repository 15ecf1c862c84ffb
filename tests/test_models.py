"""The paper's networks: golden parameter counts, every arch x norm trains, the seam holds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from equinorm.layers import NORMS, EquiConv2d, get_norm
from equinorm.models import ARCHS, build_model, count_parameters
from equinorm.models.complexity import parameter_counts

GOLDEN = json.loads((Path(__file__).parent / "golden" / "model_complexity.json").read_text())


@pytest.mark.parametrize(
    "arch,classes,expected",
    [("wrn", 10, 9_728_362), ("preact_resnet152", 10, 58_144_842), ("resnet50", 1000, 25_557_032)],
)
def test_paper_parameter_counts(arch, classes, expected):
    assert count_parameters(build_model(arch, "bn", classes)) == expected


def test_golden_parameter_counts_for_every_arch_and_norm():
    assert set(GOLDEN) == set(ARCHS)
    assert parameter_counts() == GOLDEN


def test_resnet50_matches_torchvision_keys_weights_and_logits():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    ours = build_model("resnet50", "bn", 1000).eval()
    theirs = reference.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.items()
    }
    ours.load_state_dict(theirs)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def small(arch, norm, **kw):
    options = {"width_mult": 0.125, "in_channels": 3}
    if arch == "resnet50":
        options["small_input"] = True
    options.update(kw)
    return build_model(arch, norm, 10, **options)


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_and_norm_runs_forward_and_backward(arch, norm):
    torch.manual_seed(0)
    model = small(arch, norm)
    x = torch.rand(4, 3, 8, 8)
    out = model(x)
    assert out.shape == (4, 10)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_equi_nets_use_equiconv_everywhere_affine_norms_and_a_linear_head(arch):
    model = small(arch, "equi")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is EquiConv2d for m in convs)
    assert not any(
        isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm) for m in model.modules()
    )
    norm_cls = type(get_norm("equi").norm_layer(4))
    assert sum(isinstance(m, norm_cls) for m in model.modules()) > 0
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[-1] is model.fc


@pytest.mark.parametrize("norm", list(NORMS))
def test_every_conv_comes_from_the_seam(norm):
    spec = get_norm(norm)
    conv_cls = type(spec.conv_layer(4, 4, 3))
    for arch in ("wrn", "preact_resnet50", "resnet50"):
        convs = [m for m in small(arch, norm).modules() if isinstance(m, nn.Conv2d)]
        assert all(type(m) is conv_cls for m in convs), arch


def test_he_fan_out_init_and_balanced_equi_signs():
    torch.manual_seed(0)
    model = build_model("wrn", "equi", 10)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() > 50_000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert m.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
        if isinstance(m, EquiConv2d):
            w = m.weight
            slices = w.flatten(2) if w.shape[-1] > 1 else w.flatten(1).unsqueeze(1)
            assert ((slices > 0).any(-1) & (slices < 0).any(-1)).all()


def test_weight_norm_gain_matches_reinitialised_kernel():
    model = small("preact_resnet18", "wn")
    for m in model.modules():
        if hasattr(m, "gain"):
            torch.testing.assert_close(m.normalized_weight(), m.weight)


@pytest.mark.parametrize("norm", list(NORMS))
def test_a_net_built_on_the_meta_device_loads_or_resets_to_a_working_one(norm):
    """PyTorch's fast-loading pattern: build on ``meta``, ``to_empty``, load a checkpoint (or
    ``load_state_dict(assign=True)``) computes what the saved net does; ``reset_parameters`` on
    every module gives finite outputs and fresh running statistics. (EquiNorm nets computed with
    uninitialised memory: the affine's constants were buffers no checkpoint holds.)"""
    x = torch.rand(4, 3, 16, 16)
    net = small("preact_resnet18", norm).train()
    net(x)  # running statistics away from their initial values
    with torch.device("meta"):
        empty, assigned, reset = (small("preact_resnet18", norm) for _ in range(3))
    checkpoint = {k: v.clone() for k, v in net.state_dict().items()}
    empty.to_empty(device="cpu").load_state_dict(checkpoint)
    assigned.load_state_dict({k: v.clone() for k, v in checkpoint.items()}, assign=True)
    expected = [net.train()(x), net.eval()(x)]  # train mode updates the running statistics
    for loaded in (empty, assigned):
        torch.testing.assert_close([loaded.train()(x), loaded.eval()(x)], expected)
    reset.to_empty(device="cpu")
    for m in reset.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for m in reset.modules():
        if isinstance(m, EquiConv2d):
            assert (m.running_mean == 1).all() and m.num_batches_tracked == 0
        if hasattr(m, "gain"):  # weight normalization's g = ||v||
            torch.testing.assert_close(m.normalized_weight(), m.weight)
    assert reset.eval()(x).isfinite().all() and reset.train()(x).isfinite().all()


def test_zero_init_residual():
    model = small("resnet50", "bn", zero_init_residual=True)
    scales = model.residual_scales()
    assert len(scales) == 16 and all(bool((s.weight == 0).all()) for s in scales)
    with pytest.raises(ValueError, match="zero_init_residual"):
        small("wrn", "bn", zero_init_residual=True)


@pytest.mark.parametrize("arch", ["wrn", "preact_resnet18", "resnet50"])
def test_hook_is_applied_once_at_the_requested_point(arch):
    torch.manual_seed(0)
    model = small(arch, "bn").eval()
    x = torch.rand(2, 3, 16, 16)
    plain = model(x)
    for point in model.mix_points:
        seen = []

        def hook(h, seen=seen):
            seen.append(h.shape)
            return h

        torch.testing.assert_close(model(x, hook_at=point, hook=hook), plain)
        assert len(seen) == 1
        if point == 0:
            assert seen[0] == x.shape
        assert not torch.allclose(model(x, hook_at=point, hook=lambda h: h * 0.5), plain)


def test_single_channel_small_inputs():
    for arch in ARCHS:
        kw = {"in_channels": 1}
        out = small(arch, "equi", **kw)(torch.rand(3, 1, 8, 8))
        assert out.shape == (3, 10)


def test_unknown_arch_and_option_name_the_valid_choices():
    with pytest.raises(KeyError, match="valid archs: wrn, preact_resnet18"):
        build_model("wrn28", "bn")
    with pytest.raises(TypeError, match="valid options: num_classes, in_channels, width_mult"):
        build_model("wrn", "bn", small_input=True)
    with pytest.raises(KeyError, match="valid norms"):
        build_model("wrn", "batchnorm")


def _digits_loss_after_steps(final_norm: bool, steps: int = 80) -> float:
    """Cross-entropy on the digits after ``steps`` SGD steps (lr 0.1, momentum 0.9, batch 64) of
    the demo's quarter-width PreActResNet-18 with Weight Standardization + GroupNorm."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = build_model(
        "preact_resnet18", "ws_gn", in_channels=1, width_mult=0.25, final_norm=final_norm
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(steps):
        i = torch.randint(0, len(y), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        if not loss.isfinite():
            return math.inf
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y).item()


def test_final_norm_lets_weight_standardization_train_a_preact_resnet():
    """WS kernels have variance 1, not He's 2/fan: without a norm before the head the classifier
    reads the residual stream at that scale and the run blows up; with it, it learns."""
    with_norm = build_model("preact_resnet18", "bn", final_norm=True)
    without = build_model("preact_resnet18", "bn")
    assert count_parameters(with_norm) - count_parameters(without) == 2 * 512  # one BN, 512 ch
    assert _digits_loss_after_steps(final_norm=True) < 1.0  # chance: ln 10 = 2.3
    assert _digits_loss_after_steps(final_norm=False) > 10.0  # or not finite


@pytest.mark.parametrize("final_norm", [False, True])
def test_a_run_of_weight_standardization_without_a_final_norm_is_warned_about(
    tmp_path, monkeypatch, caplog, final_norm
):
    """norm=ws_gn on a PreActResNet as the reference code builds it (no norm before the head)
    diverges or stays at chance at every lr (the test above); such a run started without a word."""
    from equinorm.train import build
    from equinorm.train.run import run
    from tests.conftest import compose_cfg

    class Built(Exception):
        """Raised where the trainer would be built: the warning comes before."""

    def stop(*args, **kwargs):
        raise Built

    monkeypatch.setattr(build, "trainer", stop)
    args = ["experiment=digits_demo", "debug=smoke", "norm=ws_gn", f"arch.final_norm={final_norm}"]
    with pytest.raises(Built):
        run(compose_cfg(*args, results=tmp_path))
    assert ("norm=ws_gn on preact_resnet18 without arch.final_norm=true" in caplog.text) == (
        not final_norm
    )
