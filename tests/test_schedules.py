"""Schedules (paper 6.1, 6.2): values at the points the paper names; validation of milestones."""

from __future__ import annotations

import pytest

from equinorm.errors import ConfigError
from equinorm.train.schedules import Schedule
from tests.conftest import compose_cfg


def schedule(name, epochs=None, *overrides):
    cfg = compose_cfg(f"schedule={name}", *overrides)
    return Schedule(cfg.schedule, epochs or cfg.epochs)


def test_step_schedule_decays_tenfold_at_150_and_225():
    s = schedule("step", 300)
    assert s(0) == (0.1, 0.9)
    assert s(149.99)[0] == pytest.approx(0.1)
    assert s(150)[0] == pytest.approx(0.01)
    assert s(224.5)[0] == pytest.approx(0.01)
    assert s(225)[0] == pytest.approx(0.001)
    assert s(299.9)[0] == pytest.approx(0.001)


def test_superconvergence_follows_the_papers_pieces():
    s = schedule("superconvergence", 30)
    expect = {
        0: (0.1, 0.95),
        6.5: (0.3, 0.90),
        13: (0.5, 0.85),
        19.5: (0.3, 0.90),
        25.99: (0.1 + 0.4 * 0.01 / 13, 0.95 - 0.1 * 0.01 / 13),
        28: (0.0505, 0.85),
        30: (0.001, 0.85),
    }
    for t, (lr, mom) in expect.items():
        got = s(t)
        assert got[0] == pytest.approx(lr, rel=1e-6), t
        assert got[1] == pytest.approx(mom, rel=1e-6), t


def test_superconvergence_scales_its_whole_cycle_with_schedule_lr():
    """The README's `experiment=cifar10_wrn_short schedule.lr=0.2,0.1,0.05` sweep and the tuned
    comparison's default key: the paper's 5-fold ramps from the starting lr, whatever it is."""
    paper = schedule("superconvergence", 30)
    doubled = schedule("superconvergence", 30, "schedule.lr=0.2")
    for t in (0, 6.5, 13, 19.5, 28, 30):
        assert doubled(t)[0] == pytest.approx(2 * paper(t)[0], rel=1e-12), t
        assert doubled(t)[1] == paper(t)[1]
    assert doubled(13)[0] == pytest.approx(1.0)


def test_superconvergence_final_momentum_is_a_config_value():
    s = schedule("superconvergence", 30, "schedule.final_momentum=0.95")
    assert s(27)[1] == 0.95


def test_cosine_with_warmup():
    s = schedule("cosine", 10, "schedule.warmup_epochs=2", "schedule.min_lr=0.001", "epochs=10")
    assert s(0)[0] == 0.0
    assert s(1)[0] == pytest.approx(0.05)
    assert s(2)[0] == pytest.approx(0.1)
    assert s(6)[0] == pytest.approx(0.001 + 0.099 * 0.5)
    assert s(10)[0] == pytest.approx(0.001)


def test_rescale_squeezes_the_schedule_into_the_epochs():
    s = schedule("step", 2, "schedule.rescale=true")
    assert s(0.99)[0] == pytest.approx(0.1)
    assert s(1.0)[0] == pytest.approx(0.01)
    assert s(1.5)[0] == pytest.approx(0.001)
    sc = schedule("superconvergence", 3, "schedule.rescale=true")
    assert sc(1.3)[0] == pytest.approx(0.5)


def test_milestones_beyond_the_epochs_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"schedule\.milestones=\[150, 225\] exceed epochs=100"):
        schedule("step", 100)
    with pytest.raises(ConfigError, match=r"schedule\.lr_points end at epoch 30"):
        schedule("superconvergence", 20)
    with pytest.raises(ConfigError, match="increasing"):
        schedule("step", 300, "schedule.milestones=[225,150]")
