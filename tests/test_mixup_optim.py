"""Manifold mixup and the optimizer's no-decay rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from equinorm.errors import ConfigError
from equinorm.layers import NORMS
from equinorm.models import build_model
from equinorm.train.mixup import Mixup
from equinorm.train.optim import build_optimizer, param_groups
from tests.conftest import compose_cfg


def mixup(name="manifold", *overrides, seed=0):
    return Mixup(compose_cfg(f"mixup={name}", *overrides).mixup, seed)


def test_draws_are_beta_distributed_uniform_over_points_and_reproducible():
    m = mixup()
    draws = [m.draw(16, "cpu") for _ in range(3000)]
    lams = np.array([d[3] for d in draws])
    points = np.bincount([d[0] for d in draws])
    assert lams.mean() == pytest.approx(0.5, abs=0.02)
    assert lams.var() == pytest.approx(1 / (4 * (2 * 6 + 1)), rel=0.1)  # Beta(6, 6)
    assert points.min() > 900 and len(points) == 3
    assert all(sorted(d[2].tolist()) == list(range(16)) for d in draws[:10])
    again = mixup()
    assert [again.draw(16, "cpu")[3] for _ in range(5)] == list(lams[:5])


def test_state_round_trip_continues_the_same_stream():
    a = mixup()
    for _ in range(7):
        a.draw(8, "cpu")
    b = mixup(seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        da, db = a.draw(8, "cpu"), b.draw(8, "cpu")
        assert da[0] == db[0] and da[3] == db[3] and torch.equal(da[2], db[2])


def test_input_mixup_mixes_at_the_input_only():
    m = mixup("input")
    assert {m.draw(4, "cpu")[0] for _ in range(50)} == {0}


def test_mixer_and_model_hook_mix_the_hidden_state():
    torch.manual_seed(0)
    model = build_model("preact_resnet18", "bn", 10, width_mult=0.125).eval()
    m = mixup()
    x = torch.rand(6, 3, 8, 8)
    point, _, perm, lam_f = m.draw(6, "cpu")
    seen = {}

    def spy(h):
        seen["in"] = h
        seen["out"] = m.mixer(h)
        return seen["out"]

    model(x, hook_at=point, hook=spy)
    torch.testing.assert_close(seen["out"], lam_f * seen["in"] + (1 - lam_f) * seen["in"][perm])


def test_bce_loss_is_the_reference_codes_and_ce_is_mixed_cross_entropy():
    torch.manual_seed(0)
    logits, y, y2 = torch.randn(5, 10), torch.randint(0, 10, (5,)), torch.randint(0, 10, (5,))
    lam = torch.tensor(0.3)
    target = 0.3 * F.one_hot(y, 10).float() + 0.7 * F.one_hot(y2, 10).float()
    reference = torch.nn.BCELoss()(torch.softmax(logits, 1), target)
    torch.testing.assert_close(mixup().criterion(logits, y, y2, lam), reference)
    ce = mixup("manifold", "mixup.loss=ce").criterion(logits, y, y2, lam)
    torch.testing.assert_close(
        ce, 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y2)
    )


@pytest.mark.parametrize("gap", [5.0, 17.0, 30.0])
def test_bce_gradient_is_the_reference_codes_where_a_softmax_output_rounds_to_one(gap):
    # from a logit ~17 above the others softmax gives 1.0 in float32: BCELoss's gradient stays
    # finite there (its denominator is clamped), so a confident network trains on
    logits = torch.tensor([[gap, 0.0, 0.0], [0.0, 1.0, -1.0]])
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = mixup().criterion(ours, torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor(0.5))
    reference = torch.nn.BCELoss()(torch.softmax(theirs, 1), target)
    loss.backward(), reference.backward()
    torch.testing.assert_close(loss, reference)
    assert torch.isfinite(ours.grad).all()
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_bce_of_a_network_gone_nan_is_a_nan_loss_not_an_error():
    # BCELoss refuses inputs outside [0, 1] (on a GPU: a device-side assert); the trainer needs the
    # NaN to report the divergence and locate its first non-finite layer
    logits = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, -1.0]], requires_grad=True)
    loss = mixup().criterion(logits, torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor(0.5))
    assert torch.isnan(loss)
    loss.backward()


@pytest.mark.parametrize(
    "override,match",
    [
        ("mixup.alpha=0", "mixup.alpha"),
        ("mixup.points=[3]", "mixup.points"),
    ],
)
def test_bad_mixup_values_fail_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        mixup("manifold", override)


@pytest.mark.parametrize("norm", list(NORMS))
def test_no_weight_decay_on_rank_one_parameters_for_every_norm(norm):
    model = build_model("preact_resnet18", norm, 10, width_mult=0.125)
    decay, no_decay = param_groups(model, 1e-4, 1)  # every net has rank-1 params (fc.bias)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() <= 1 for p in no_decay["params"])
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == total
    assert any(p is model.fc.weight for p in decay["params"])
    everything, *rest = param_groups(model, 1e-4, -1)
    assert not rest and len(everything["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("experiment", ["cifar10_wrn_overfit", "cifar10_preresnet152_mixup"])
def test_default_optimizer_decays_every_parameter_like_the_reference(experiment):
    """The paper's "decay: 0.0001" on SGD(net.parameters()): biases and scales included."""
    cfg = compose_cfg(f"experiment={experiment}", "norm=bn")
    model = build_model("preact_resnet18", "bn", 10, width_mult=0.125)
    opt = build_optimizer(model, cfg.optim, lr=0.1, momentum=0.9)
    (group,) = opt.param_groups
    assert group["weight_decay"] == 1e-4 and len(group["params"]) == len(list(model.parameters()))
    assert group["nesterov"] is (experiment == "cifar10_preresnet152_mixup")
