"""Virtual devices (the paper's 2-GPU batch in one process) and the global batch in a run's
identity; where a diverged run's first non-finite value came from."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from torch.nn import functional as F

from equinorm.errors import ConfigError
from equinorm.layers import EquiConv2d, input_channel_means
from equinorm.layers.equiconv import equi_denominator
from equinorm.models import build_model
from equinorm.run import checkpoint as ckpt
from equinorm.train.nonfinite import NonFiniteProbe, account
from equinorm.train.run import run
from tests.conftest import compose_cfg, read_history, run_cli, run_dir_of

TINY = [
    "experiment=digits_demo",
    "seed=1",
    "debug=smoke",
    "mixup=manifold",
    "train.equilibrium_stats=false",
]


@pytest.mark.parametrize("norm", ["bn", "gn", "equi"])
def test_a_virtual_step_averages_the_micro_batches_own_gradients(norm):
    """Each micro-batch is normalized with its own statistics: the step's gradient is the mean of
    the gradients of the halves taken alone (whole-batch statistics would give another one)."""
    from equinorm.layers import get_norm

    torch.manual_seed(0)
    model = build_model("preact_resnet18", get_norm(norm), 10, in_channels=1, width_mult=0.25)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    halves = []
    for part in (slice(0, 8), slice(8, 16)):
        m = copy.deepcopy(model)
        F.cross_entropy(m(x[part]), y[part]).backward()
        halves.append([p.grad for p in m.parameters()])
    whole = copy.deepcopy(model)
    F.cross_entropy(whole(x), y).backward()

    cfg = compose_cfg(*TINY, f"norm={norm}", "mixup=none", "train.devices=2")
    from equinorm.train.mixup import Mixup
    from equinorm.train.trainer import Trainer

    trainer = Trainer.__new__(Trainer)  # only what step() needs
    trainer.model = trainer.raw_model = model
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer.schedule = lambda t: (0.0, 0.0)
    trainer.mixups = [Mixup(cfg.mixup, 0, j) for j in range(2)]
    trainer.virtual_devices, trainer.autocast_dtype, trainer.device = 2, None, torch.device("cpu")
    trainer.dist = type("D", (), {"enabled": False})()
    from equinorm.train.trainer import Sums

    trainer.sums = Sums.zeros("cpu")
    trainer.step(x, y, 0.0)
    differs = False
    for p, a, b, w in zip(model.parameters(), *halves, whole.parameters(), strict=True):
        torch.testing.assert_close(p.grad, (a + b) / 2, rtol=1e-5, atol=1e-7)
        differs |= not torch.allclose(p.grad, w.grad, rtol=1e-3, atol=1e-6)
    assert differs or norm == "gn"  # GN's statistics are per example: halves change nothing


@pytest.mark.parametrize("norm", ["bn", "equi"])
def test_two_virtual_devices_equal_two_gloo_ddp_ranks_step_for_step(tmp_path, norm):
    """train.devices=2 in one process == torchrun --nproc_per_node=2: same data, mixup draws,
    statistics, averaged gradients and (rank 0's) running statistics; history and weights."""
    args = [*TINY, f"norm={norm}", "train.devices=2", "train.max_train_batches=4"]
    args.append("train.max_eval_batches=null")  # per rank: the whole test set in both
    if norm == "equi":  # a validation split: split and evaluated the same way (issue 26)
        args.append("dataset.val_size=150")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert run(compose_cfg(*args, results=single))["status"] == "complete"  # as the CLI runs it
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = run_cli(*args, f"results_dir={ddp}", cwd=tmp_path, launcher=[*launcher, "-m"])
    assert proc.returncode == 0, proc.stdout[-8000:]  # a rank's fatal stack, if any
    dirs = [run_dir_of(compose_cfg(*args, results=r)) for r in (single, ddp)]
    histories = [read_history(d) for d in dirs]
    assert len(histories[0]) == 2
    assert ("val_acc" in histories[0][0]) == (norm == "equi")
    for a, b in zip(*histories, strict=True):
        for key in a:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6, abs=1e-9), key
    models = [torch.load(d / "model.pt", weights_only=True) for d in dirs]
    for key, value in models[0].items():
        torch.testing.assert_close(value, models[1][key], rtol=1e-5, atol=1e-6, msg=key)
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    assert [(s["world_size"], s["virtual_devices"]) for s in summaries] == [(1, 2), (2, 1)]
    assert summaries[0]["global_batch"] == summaries[1]["global_batch"] == 16
    width = compose_cfg(*args).arch.width_mult
    assert summaries[0]["width_mult"] == summaries[1]["width_mult"] == width  # reports show it


def test_a_checkpoint_resumes_only_under_its_world_size(tmp_path, monkeypatch):
    from equinorm.train import trainer as trainer_mod

    cfg = compose_cfg(*TINY, "norm=bn", "train.devices=2", results=tmp_path)
    real_poll = trainer_mod.Trainer._poll

    def poll(self, b, guard):  # preempted mid-epoch 2, as by SIGTERM
        if self.state.epoch == 1 and b == 1:
            import signal

            guard.requested = signal.SIGTERM
        return real_poll(self, b, guard)

    monkeypatch.setattr(trainer_mod.Trainer, "_poll", poll)
    with pytest.raises(BaseException):  # noqa: B017 -- Preempted hands the signal on
        run(cfg)
    monkeypatch.undo()
    path = run_dir_of(cfg) / "checkpoint.pt"
    state = ckpt.load(path)
    assert len(state["mixup"]) == 2 and state["virtual_devices"] == 2  # both devices' draws
    state["world_size"] = 2  # as if written by torchrun --nproc_per_node=2 x 1 device
    state["virtual_devices"] = 1
    ckpt.save_atomic(state, path)
    with pytest.raises(ConfigError, match=r"2 process\(es\) x 1 virtual.*--nproc_per_node=2"):
        run(cfg)


def test_devices_that_do_not_split_over_the_processes_fail_before_any_file(tmp_path):
    from equinorm.experiment.checks import virtual_devices

    cfg = compose_cfg(*TINY, "norm=bn", "train.devices=3", results=tmp_path)
    with pytest.raises(ConfigError, match=r"train\.devices=3 does not split over 2"):
        virtual_devices(cfg, 2)
    assert virtual_devices(cfg, 1) == 3 and virtual_devices(compose_cfg(*TINY), 4) == 1


def test_the_probe_names_the_equinorm_layer_whose_denominator_is_zero():
    """Output channel 0's positive weights all meet input channel 0, which is dead (all zero):
    D_0 = 0 and the layer's output is the first non-finite value. The dead input comes in the
    second forward pass of the step (a second virtual device): its D is the one reported."""
    conv = EquiConv2d(3, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(-torch.rand(2, 3, 3, 3) - 0.1)
        conv.weight[0, 0] = torch.rand(3, 3) + 0.1
        conv.weight[1, 1, 0, 0] = 0.5
    model = torch.nn.Sequential(torch.nn.Identity(), conv, torch.nn.ReLU(), torch.nn.Flatten())
    x = torch.rand(4, 3, 6, 6)
    live = x.clone()
    x[:, 0] = 0.0
    with NonFiniteProbe(model) as probe:
        model(live)
        model(x)
        info = probe.describe(probe.first_nonfinite_output(), "forward")
    assert info == {
        "nonfinite_layer": "1 (EquiConv2d)",
        "nonfinite_in": "forward",
        "nonfinite_min_abs_D": 0.0,
    }
    x[:, 0] = 0.3  # a live channel: finite everywhere
    with NonFiniteProbe(model) as probe:
        model(x)
        assert probe.first_nonfinite_output() is None
    assert "D is 0" in account(info) and "norm.eps=" in account(info)
    assert account({**info, "nonfinite_min_abs_D": 2e-9}).endswith("smallest |D| 2e-09")


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_single_pass_d_is_zero_when_every_weight_of_a_channel_has_one_sign(sign):
    """The paper's caveat (5.2), met by the digits' one-channel stem at lr 0.05: the single-pass
    estimate of a one-sign kernel's positive sum is 0 (all negative: exactly, no positive weight
    counted; all positive: up to rounding) whatever the input; the exact one is not."""
    conv = EquiConv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[0] = sign * (torch.rand(1, 3, 3) + 0.1)
    x = torch.rand(4, 1, 6, 6) + 0.1
    means, w = input_channel_means(x), conv.weight.detach()
    scale = float((means * w[0].abs().sum()).sum())
    assert abs(float(equi_denominator(w, means, single_pass=True)[0])) < 1e-6 * scale
    assert float(equi_denominator(w, means, single_pass=False)[0]) > 0.1 * scale
    if sign < 0:
        model = torch.nn.Sequential(conv)
        with NonFiniteProbe(model) as probe:
            assert not bool(torch.isfinite(model(x)).all())
            info = probe.describe(probe.first_nonfinite_output(), "forward")
        assert info["nonfinite_min_abs_D"] == 0.0
    conv.single_pass = False
    assert bool(torch.isfinite(conv(x)).all())


def test_a_diverged_run_names_where_its_first_non_finite_value_appeared(tmp_path):
    cfg = compose_cfg(*TINY, "norm=none", "mixup=none", "schedule.lr=1e6", results=tmp_path)
    summary = run(cfg)
    assert summary["status"] == "diverged"
    assert summary["nonfinite_epoch"] == 1 and 1 <= summary["nonfinite_batch"] <= 3
    assert summary["nonfinite_in"] in ("forward", "backward")
    layer = summary["nonfinite_layer"].split(" ")[0]
    model = build_model("preact_resnet18", "none", 10, in_channels=1, width_mult=0.25)
    assert layer in dict(model.named_modules())  # a real module of the net


def test_a_diverged_smoke_run_exits_non_zero_with_one_line(tmp_path):
    proc = run_cli(
        *TINY, "norm=none", "mixup=none", "schedule.lr=1e6", f"results_dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stdout[-2000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("equinorm: error")]
    assert len(errors) == 1 and "diverged in epoch 1" in errors[0]
    assert "first non-finite value:" in errors[0] and "Traceback" not in proc.stdout


def test_a_smoke_run_whose_denominator_reaches_zero_says_so_and_how_to_avoid_it(tmp_path):
    """The digits' one-channel stem at lr 0.05, seed 0: a step leaves an output channel's 9
    weights all negative (single-pass D = 0, found at the command line)."""
    args = ["experiment=digits_demo", "debug=smoke", "seed=0", "norm=equi", "schedule.lr=0.05"]
    proc = run_cli(*args, f"results_dir={tmp_path}", cwd=tmp_path)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("equinorm: error")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout[-2000:]
    assert "stem (EquiConv2d) in the forward pass" in errors[0]
    assert "denominator D is 0" in errors[0] and "norm.eps=1e-6" in errors[0]
