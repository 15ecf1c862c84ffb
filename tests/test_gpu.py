"""On a CUDA device (``make gpu-check``; skipped without one): the paths tests/test_autocast.py
and tests/test_cuda_paths.py check on the CPU, under CUDA's real autocast, layouts and compiler."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn import functional as F

from equinorm.layers import NORMS, EquiConv2d
from equinorm.models import ARCHS
from equinorm.train import trainer as trainer_module
from equinorm.train.run import run
from tests.conftest import compose_cfg, fabricated
from tests.test_cuda_paths import _assert_same_step, _dataset, _loader, mini_net
from tests.test_models import small

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
CL = torch.channels_last


def bf16():
    return torch.autocast("cuda", dtype=torch.bfloat16)


@pytest.mark.parametrize("single_pass", [True, False])
def test_equiconv_under_cuda_bf16_autocast(single_pass):
    torch.manual_seed(0)
    conv = EquiConv2d(32, 64, 3, padding=1, bias=False, single_pass=single_pass).to(CUDA)
    x = torch.rand(16, 32, 16, 16, device=CUDA, requires_grad=True)
    with bf16():
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()
    conv.eval()
    with torch.no_grad():
        exact = conv.eval_weight(1.0).clone()
        with bf16():
            torch.testing.assert_close(conv.eval_weight(1.0), exact, atol=0, rtol=0)


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_and_norm_trains_a_bf16_channels_last_step_on_cuda(arch, norm):
    torch.manual_seed(0)
    model = small(arch, norm).to(CUDA, memory_format=CL)
    x = torch.rand(8, 3, 16, 16, device=CUDA).contiguous(memory_format=CL)
    with bf16():
        logits = model(x)
    F.cross_entropy(logits.float(), torch.arange(8, device=CUDA) % 10).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if p.dim() == 4:
            assert p.grad.is_contiguous(memory_format=CL), name


@pytest.mark.parametrize("norm", list(NORMS))
def test_inductor_on_cuda_equals_eager(norm):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = mini_net(norm).to(CUDA)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True)
    x, y = torch.rand(8, 3, 16, 16, device=CUDA), torch.arange(8, device=CUDA) % 10
    _assert_same_step(eager, twin, compiled, x, y)


def test_device_loader_on_cuda_gives_the_cpu_loaders_batches():
    data = _dataset()
    for (xc, yc), (xg, yg) in zip(
        _loader(*data).iterate(2), _loader(*data, device=CUDA).iterate(2), strict=True
    ):
        assert xg.device.type == "cuda"
        # the same images, crops and flips; CUDA's fused multiply-add rounds the standardization
        # once where the CPU rounds twice (H200: 1 ulp in a third of the pixels)
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=2e-7)
        assert torch.equal(yg.cpu(), yc)


@pytest.mark.parametrize("experiment", ["cifar10_wrn_short", "cifar10_wrn_overfit"])
def test_training_steps_never_wait_for_the_gpu(experiment, data_root, tmp_path, monkeypatch):
    """CUDA's sync debug mode turns any synchronising call inside the training steps of an
    epoch shorter than CHECK_EVERY (no divergence check falls in it) into an error."""
    fit = trainer_module.Trainer.train_epoch

    def strict(self, epoch, guard):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return fit(self, epoch, guard)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", strict)
    batches = trainer_module.CHECK_EVERY - 1
    cfg = compose_cfg(
        f"experiment={experiment}",
        "norm=equi",
        "debug=smoke",
        "train.device=cuda",
        "train.batch_size=2",
        f"train.max_train_batches={batches}",
        *fabricated(data_root),
        results=tmp_path,
    )
    assert run(cfg)["status"] == "complete"


@pytest.mark.parametrize("norm", ["equi", "bn"])
def test_training_with_cuda_graphs_matches_training_without(norm, data_root, tmp_path):
    """train.compile_mode=reduce_overhead (CUDA graphs; docs/performance.md: 2.5x the wrn's
    step on an H200) trains what the default mode trains: mixup's three mix points, the
    evaluation's last short batch and the running statistics' updates all replay correctly."""
    runs = {}
    for mode in ("default", "reduce_overhead"):
        torch._dynamo.reset()
        cfg = compose_cfg(
            "experiment=cifar10_wrn_short",
            f"norm={norm}",
            "debug=smoke",
            "train.device=cuda",
            "train.compile=true",
            f"train.compile_mode={mode}",
            "train.max_train_batches=6",
            *fabricated(data_root),
            results=tmp_path / mode,
        )
        runs[mode] = run(cfg)
    assert all(r["status"] == "complete" for r in runs.values())
    for key in ("test_loss", "test_acc"):
        graphs, plain = runs["reduce_overhead"][key], runs["default"][key]
        assert math.isfinite(graphs) and graphs == pytest.approx(plain, rel=0.05, abs=1.0), key
