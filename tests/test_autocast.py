"""EquiNorm under CUDA's autocast policy, reproduced on the CPU (see tools/cuda_autocast.py).

The trainer runs the forward pass under bf16 autocast and the backward pass outside it. Under
CUDA's policy ``mv``/``addmv``/``addr``/``linalg_vecdot`` come out bf16, so a weight transform
that relies on the caller's policy mixes dtypes in its backward (a crash) and loses the kernel's
centring in eval. The layer must keep its statistics and transform in float32 itself.

Tolerances: the EquiNorm kernel is float32 arithmetic, identical under autocast and without it
(``atol=0``, and its centring residual below 1e-6). An EquiNorm network's eval logits under bf16
autocast stay within 1e-2 (relative Frobenius error) of its float32 logits: measured 0.002-0.003
for every arch here, where the bf16 convolutions are the only low-precision step. The other norms
are held to finite outputs only: in these 1/8-width nets on 8x8 inputs GroupNorm normalizes groups
of a handful of values, and bf16 noise in them reaches 20-100% of the logits (0.01-0.2 for BN).
"""

from __future__ import annotations

import pytest
import torch
from tools.cuda_autocast import cuda_policy_on_cpu
from torch.nn import functional as F

from equinorm.layers import NORMS, EquiConv2d
from equinorm.models import ARCHS
from tests.test_models import small

pytest.importorskip("expecttest")  # torch's autocast tables import it


@pytest.fixture
def cuda_policy():
    """CPU autocast that follows CUDA's op lists for the duration of a test."""
    with cuda_policy_on_cpu() as policy:
        yield policy


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_the_fixture_casts_what_cuda_casts(cuda_policy):
    a, v = torch.randn(4, 4), torch.randn(4)
    assert {"mv", "addmv", "addr", "linalg_vecdot"} <= set(cuda_policy.lower)
    with bf16():
        assert torch.mv(a, v).dtype == torch.bfloat16
        assert torch.addr(a, v, v).dtype == torch.bfloat16
        assert torch.softmax(a.bfloat16(), 1).dtype == torch.float32
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            F.binary_cross_entropy(torch.rand(3), torch.rand(3))
    with bf16():  # and leaves CPU's own policy alone outside the fixture
        pass
    assert torch.mv(a, v).dtype == torch.float32


def centring_residual(conv: EquiConv2d, w2: torch.Tensor) -> float:
    """|sum_c m_c sum_jk w''_dcjk| relative to the kernel's scale: 0 for a centred kernel."""
    m = conv.running_mean.double()
    per_channel = (w2.double().sum(dim=(2, 3)) * m).sum(dim=1)
    return float(per_channel.abs().max() / (w2.double().abs().sum(dim=(1, 2, 3)) * m.max()).max())


@pytest.mark.parametrize("single_pass", [True, False])
def test_equiconv_transform_stays_float32_in_training_and_eval(cuda_policy, single_pass):
    torch.manual_seed(0)
    conv = EquiConv2d(16, 32, 3, padding=1, bias=False, single_pass=single_pass)
    x = torch.rand(8, 16, 12, 12)
    conv(x)  # one training step of running means
    conv.eval()
    with torch.no_grad():
        exact = conv.eval_weight(conv.scale_factor(x)).clone()
        with bf16():
            under = conv.eval_weight(conv.scale_factor(x))
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, atol=0, rtol=0)
    assert centring_residual(conv, under) < 1e-6
    conv.train()
    for path in ("fused", "composed"):
        conv.weight.grad = None
        xi = x.clone().requires_grad_()
        with bf16():
            y = (
                conv(xi)
                if path == "fused"
                else conv._conv_forward(xi, conv.normalized_weight(xi), None)
            )
        assert y.dtype == torch.bfloat16  # the convolution itself runs in the autocast dtype
        y.float().square().mean().backward()  # outside autocast, as the trainer does
        assert conv.weight.grad.dtype == torch.float32
        assert torch.isfinite(conv.weight.grad).all() and torch.isfinite(xi.grad).all()


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_and_norm_trains_a_step_under_cuda_autocast(cuda_policy, arch, norm):
    torch.manual_seed(0)
    model = small(arch, norm)
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    with bf16():
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()  # backward outside autocast
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.dtype == p.dtype, f"{name}: gradient in {p.grad.dtype}"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    model.eval()
    with torch.no_grad():
        reference = model(x)
        with bf16():
            low = model(x).float()
    assert torch.isfinite(low).all()
    if norm == "equi":
        assert float((low - reference).norm() / reference.norm()) < 1e-2
    for m in model.modules():
        if isinstance(m, EquiConv2d):
            exact = m.eval_weight(1.0).clone()
            with bf16():
                torch.testing.assert_close(m.eval_weight(1.0), exact, atol=0, rtol=0)
