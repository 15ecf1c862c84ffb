"""The trainer and the Hydra experiments: composition, smoke runs, outputs, determinism."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from equinorm.train.run import run
from tests.conftest import SHORT, compose_cfg, fabricated, read_history, run_cli, run_dir_of

EXPERIMENTS = [
    "cifar10_wrn_overfit",
    "cifar10_wrn_quarter",
    "cifar10_preresnet152_mixup",
    "cifar100_preresnet152_mixup",
    "svhn_wrn_mixup",
    "imagenet_resnet50",
    "cifar10_wrn_short",
    "digits_demo",
]

# The paper's settings per experiment (docs/spec.md sections 4-5): what `--cfg job` must show.
PAPER = {
    "cifar10_wrn_overfit": {
        "dataset.name": "cifar10",
        "arch.name": "wrn",
        "epochs": 300,
        "schedule.name": "step",
        "schedule.milestones": [150, 225],
        "mixup.name": "none",
        "norm.stat_fraction": 1.0,
    },
    "cifar10_wrn_quarter": {
        "dataset.name": "cifar10",
        "arch.name": "wrn",
        "epochs": 300,
        "mixup.name": "none",
        "norm.stat_fraction": 0.25,
    },
    "cifar10_preresnet152_mixup": {
        "dataset.name": "cifar10",
        "arch.name": "preact_resnet152",
        "epochs": 300,
        "mixup.name": "manifold",
        "mixup.alpha": 6.0,
        "mixup.points": [0, 1, 2],
        "optim.nesterov": True,  # the reference code's SGD (supervised/main.py)
    },
    "cifar100_preresnet152_mixup": {
        "dataset.name": "cifar100",
        "arch.name": "preact_resnet152",
        "mixup.name": "manifold",
        "mixup.alpha": 6.0,
        "optim.nesterov": True,
    },
    "svhn_wrn_mixup": {
        "dataset.name": "svhn",
        "dataset.extra": True,
        "arch.name": "wrn",
        "epochs": 160,
        "schedule.milestones": [80, 120],
        "mixup.name": "manifold",
        "train.devices": 2,  # 2 GPUs x 128: the global batch 256 of paper 6.3
    },
    "imagenet_resnet50": {
        "dataset.name": "imagenet",
        "arch.name": "resnet50",
        "epochs": 100,
        "schedule.milestones": [30, 60, 90],
        "mixup.name": "none",
        "schedule.lr": 0.1,  # for the global batch 256 below (Goyal et al. 2017)
        "train.batch_size": 32,
        "train.devices": 8,
    },
    "cifar10_wrn_short": {
        "dataset.name": "cifar10",
        "arch.name": "wrn",
        "epochs": 30,
        "schedule.name": "superconvergence",
        "schedule.lr": 0.1,  # "starting at 0.1" (paper 6.2), the cycle's points multiples of it
        "mixup.name": "manifold",
        "mixup.alpha": 6.0,
    },
    "digits_demo": {"dataset.name": "digits", "arch.name": "preact_resnet18"},
}
COMMON = {"optim.weight_decay": 1e-4, "schedule.momentum": 0.9, "train.batch_size": 128}
# every experiment: decay on every parameter (paper 6.1, reference SGD(net.parameters(), ...))
EVERYWHERE = {"optim.no_decay_max_rank": -1}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_the_papers_settings_and_sweep(experiment):
    equi = "equi_quarter" if experiment == "cifar10_wrn_quarter" else "equi"  # its EquiNorm
    cfg = compose_cfg(f"experiment={experiment}", f"norm={equi}", return_hydra=True)
    expected = dict(PAPER[experiment]) | EVERYWHERE
    expected.setdefault("optim.nesterov", False)  # the paper's "SGD+Mom" elsewhere
    if experiment not in ("digits_demo", "cifar10_wrn_short", "imagenet_resnet50"):
        expected |= COMMON
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.name == experiment
    params = cfg.hydra.sweeper.params
    seeds = 3 if experiment == "imagenet_resnet50" else (5 if experiment == "digits_demo" else 10)
    assert params.seed == f"range({seeds})"
    assert equi in params.norm.split(",") and "bn" in params.norm.split(",")
    assert cfg.variant == {} and cfg.run_dir.endswith(f"-{cfg.norm.name}/seed=0")  # its own run


def test_quarter_statistics_apply_to_equinorm_only_and_plain_equinorm_is_another_run():
    quarter = compose_cfg("experiment=cifar10_wrn_quarter")  # its own choice: equi_quarter
    assert quarter.norm.name == "equi" and quarter.norm.stat_fraction == 0.25
    assert "stat_fraction" not in compose_cfg("experiment=cifar10_wrn_quarter", "norm=bn").norm
    assert compose_cfg("experiment=cifar10_wrn_overfit", "norm=equi").norm.stat_fraction == 1.0
    plain = compose_cfg("experiment=cifar10_wrn_quarter", "norm=equi")  # computes something else
    assert plain.variant == {"norm.stat_fraction": "1.0"} and plain.run_dir != quarter.run_dir
    # the same computation spelt two ways is one run
    spelt = compose_cfg(
        "experiment=cifar10_wrn_quarter", "norm=equi_quarter", "norm.stat_fraction=1"
    )
    assert spelt.run_dir == plain.run_dir


def _swept_norms(experiment: str) -> list[str]:
    """The norms an experiment's own sweep runs (``hydra.sweeper.params.norm``)."""
    return compose_cfg(f"experiment={experiment}", return_hydra=True).hydra.sweeper.params.norm


SMOKE = [(e, n) for e in EXPERIMENTS for n in _swept_norms(e).split(",")]


@pytest.mark.parametrize(("experiment", "norm"), SMOKE, ids=[f"{e}-{n}" for e, n in SMOKE])
def test_every_norm_of_every_experiment_runs_with_debug_smoke(
    experiment, norm, data_root, tmp_path
):
    """Each (experiment, norm) its sweep runs completes a smoke run (a diverged one would fail)."""
    cfg = compose_cfg(
        f"experiment={experiment}",
        f"norm={norm}",
        "debug=smoke",
        *fabricated(data_root),
        results=tmp_path,
    )
    summary = run(cfg)
    assert summary["status"] == "complete" and summary["epoch"] == 2
    run_dir = run_dir_of(cfg)
    assert (
        run_dir
        == tmp_path
        / "runs"
        / experiment
        / f"{cfg.dataset.name}-{cfg.arch.name}-{cfg.norm.name}"
        / "debug=smoke"  # a smoke run is never the experiment's own run
        / "seed=0"
    )
    assert len(read_history(run_dir)) == 2
    assert (run_dir / "config.yaml").is_file() and (run_dir / "model.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["cifar10_preresnet152_mixup", "imagenet_resnet50"])
def test_equinorm_smoke_runs_stay_finite_over_seeds(experiment, data_root, tmp_path):
    """The deep networks, where narrow layers with dead inputs can give D = 0 (debug/smoke.yaml):
    EquiNorm's smoke runs complete for seeds 0-9 (issue 12: they used to diverge)."""
    proc = run_cli(
        "-m",
        f"experiment={experiment}",
        "norm=equi",
        "debug=smoke",
        "seed=range(10)",
        "hydra/launcher=basic",
        *fabricated(data_root),
        f"results_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    summaries = sorted((tmp_path / "runs" / experiment).glob("*/debug=smoke/seed=*/summary.json"))
    assert len(summaries) == 10
    assert all(json.loads(p.read_text())["status"] == "complete" for p in summaries)


def test_smoke_runs_go_under_results_debug_unless_told_otherwise():
    cfg = compose_cfg("experiment=cifar10_wrn_short", "norm=bn", "debug=smoke")
    assert cfg.run_dir == "results/debug/runs/cifar10_wrn_short/cifar10-wrn-bn/debug=smoke/seed=0"
    assert cfg.epochs == 2 and cfg.schedule.rescale and cfg.train.max_train_batches == 3
    assert cfg.arch.width_mult == 0.5  # at 1/4, ResNet-50's D reached 0 (debug/smoke.yaml)


def test_outputs_layout_and_contents(tmp_path):
    cfg = compose_cfg(
        "epochs=2",
        "arch.width_mult=0.125",
        "train.max_train_batches=4",
        "schedule.milestones=[1]",
        "train.equilibrium_stats=true",
        results=tmp_path,
    )
    summary = run(cfg)
    run_dir = run_dir_of(cfg)
    history = read_history(run_dir, drop=())
    assert list(history[0]) == [
        "epoch",
        "lr",
        "momentum",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "epoch_time_s",
        "images_per_s",
    ]
    assert [float(r["lr"]) for r in history] == [0.1, pytest.approx(0.01)]
    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["status"] == "complete" and stored["epoch"] == 2 and stored["epochs"] == 2
    assert stored["test_acc"] == pytest.approx(float(history[-1]["test_acc"]))
    assert 0 <= stored["test_acc"] <= 100 and summary["norm"] == "equi"
    assert OmegaConf.load(run_dir / "config.yaml").seed == 0
    lines = (run_dir / "equilibrium.csv").read_text().splitlines()
    assert lines[0] == "epoch,layer,positive,negative" and len(lines) > 20
    assert "epoch 2/2" in (run_dir / "train.log").read_text()


def test_demo_reaches_85_percent_and_histories_are_identical(tmp_path):
    histories = []
    for sub in ("a", "b"):
        cfg = compose_cfg("experiment=digits_demo", "norm=equi", "seed=1", results=tmp_path / sub)
        summary = run(cfg)
        histories.append(read_history(run_dir_of(cfg)))
    assert summary["test_acc"] > 85.0
    assert histories[0] == histories[1]


def test_seeds_give_different_runs(tmp_path):
    finals = []
    for seed in (0, 1):
        cfg = compose_cfg(
            "epochs=1",
            "arch.width_mult=0.125",
            "train.max_train_batches=3",
            f"seed={seed}",
            "schedule.rescale=true",
            results=tmp_path,
        )
        run(cfg)
        finals.append(read_history(run_dir_of(cfg))[-1]["train_loss"])
    assert finals[0] != finals[1]


def test_missing_dataset_fails_within_seconds_naming_the_root(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(
        "dataset=cifar10",
        f"dataset.root={empty}",
        "dataset.download=false",
        f"results_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    last = proc.stdout.strip().splitlines()[-1]
    assert f"Looked in dataset.root={empty}" in last and "cifar10" in last
    assert not (tmp_path / "runs").exists()  # no empty run directory left behind


def test_fabricated_cifar_and_svhn_runs_complete_through_the_cli(data_root, tmp_path):
    proc = run_cli(
        "-m",
        "dataset=cifar10,cifar100,svhn",
        *fabricated(data_root),
        "debug=smoke",
        "arch=wrn",
        f"results_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "sweep of 3 job(s): 3 complete" in proc.stdout
    for dataset in ("cifar10", "cifar100", "svhn"):
        summary = tmp_path / "runs" / "default" / f"{dataset}-wrn-equi" / "debug=smoke" / "seed=0"
        assert json.loads((summary / "summary.json").read_text())["status"] == "complete"


def _logged_epochs(wandb_file: Path) -> list[int]:
    """Epochs of the history records in an offline run's .wandb file (protobuf: the key, then
    value_json, field 16, as a length-prefixed string).

    ``run.finish()`` returns before wandb's service has closed the file (its "inform finish" is
    not answered); the file is whole once the service has shut down, which the trainer's
    process waits for at its exit (``release``), and so does this."""
    from equinorm.train.wandb_logger import release

    release()
    data = wandb_file.read_bytes()
    epochs = []
    for m in re.finditer(rb"\x05epoch\x82\x01([\x01-\x09])", data):
        n = m.group(1)[0]
        epochs.append(int(float(data[m.end() : m.end() + n])))
    assert epochs, f"no history record in {wandb_file} ({len(data)} bytes): its format changed?"
    return sorted(set(epochs))


def test_a_resumed_offline_wandb_run_leaves_one_directory_with_every_epoch(tmp_path, monkeypatch):
    from tests.test_failures import preempt_in_epoch_3

    monkeypatch.delenv("WANDB_MODE", raising=False)
    args = [*SHORT, "epochs=3", "schedule.milestones=[1,2]", "wandb.mode=offline"]
    cfg = compose_cfg(*args, results=tmp_path)
    preempt_in_epoch_3(cfg, monkeypatch)  # stopped in epoch 3, after 2 logged epochs
    run(cfg)  # resumed: a second wandb start
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # one directory per run at the top level
    wandb_cli = Path(sys.executable).with_name("wandb")
    listed = subprocess.run(
        [str(wandb_cli), "sync", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "WANDB_SILENT"},
    )  # the README's `cd results && wandb sync --yes`, listing only
    out = listed.stdout + listed.stderr
    run_id = runs[0].name.split("-")[-1]
    assert "Would sync 1 run(s)" in out and f"run-{run_id}.wandb" in out, out
    (old,) = (tmp_path / "wandb" / "superseded").iterdir()
    assert old.name.split("-")[-1] == runs[0].name.split("-")[-1]  # the same run id
    (current,) = runs[0].glob("*.wandb")
    assert _logged_epochs(current) == [1, 2, 3]
    assert _logged_epochs(next(old.glob("*.wandb"))) == [1, 2]


@pytest.mark.parametrize("proxy", [None, "http://proxy.invalid:3128"])
def test_online_wandb_without_a_connection_to_its_server_goes_offline_at_once(
    tmp_path, monkeypatch, caplog, proxy
):
    """A compute node without internet: wandb.init online would retry for 90 s in every job of a
    sweep. A server that cannot be connected to is known at once (behind a proxy, wandb's client
    is left to find out)."""
    import wandb

    from equinorm.train.wandb_logger import WandbLogger, release

    release()  # wandb's settings are read once per setup: this test's environment from here on
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a closed port
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    for key in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.delenv(key.lower(), raising=False)
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
    modes, real_init = [], wandb.init

    def init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("context deadline exceeded")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    cfg = {"mode": "online", "project": "p", "entity": None, "dir": str(tmp_path)}
    try:
        WandbLogger(cfg, run_path="r", group="g", name="seed=0", config={}).finish()
    finally:
        release()
    assert modes == (["online", "offline"] if proxy else ["offline"])
    assert "logging offline" in caplog.text
    assert ("cannot connect to 127.0.0.1:9" in caplog.text) != bool(proxy), caplog.text


def test_an_online_wandb_run_that_cannot_reach_wandb_logs_offline(tmp_path, monkeypatch, caplog):
    """No network or no login (a compute node): wandb.init online fails after its timeout; the
    run's curves then go to an offline directory for `wandb sync`, where none were kept."""
    import wandb

    real_init = wandb.init

    def init(**kwargs):
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("dial tcp: lookup api.wandb.ai: no such host")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # wandb.init decides (no probe)
    args = [*SHORT, "epochs=2", "schedule.milestones=[1]", "wandb.mode=online"]
    run(compose_cfg(*args, results=tmp_path))
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    assert _logged_epochs(next(offline.glob("*.wandb"))) == [1, 2]
    assert "logging offline" in caplog.text and "no such host" in caplog.text


def test_wandbs_own_older_mode_names_are_its_modes(monkeypatch):
    """A WANDB_MODE=dryrun set for other projects (wandb accepts it: offline) failed every run:
    "Invalid value 'dryrun', expected one of [offline, online, disabled]"."""
    from equinorm import experiment
    from equinorm.experiment.schema import WandbMode

    for given, mode in [("dryrun", WandbMode.offline), ("run", WandbMode.online)]:
        monkeypatch.setenv("WANDB_MODE", given)
        assert experiment.compose(list(SHORT)).wandb.mode is mode  # the environment's
        assert compose_cfg(*SHORT, f"wandb.mode={given}").wandb.mode is mode


OFFLINE_RUN = """
import sys
from equinorm.train.wandb_logger import WandbLogger, release
cfg = {"mode": "offline", "project": "p", "entity": None, "dir": sys.argv[1]}
logger = WandbLogger(cfg, run_path="r", group="g", name="seed=0", config={})
logger.log({"loss": 1.0}, step=1)
logger.finish()
release()
"""


def test_an_offline_wandb_run_opens_no_connection(tmp_path):
    """Offline means no network: wandb 0.31 sends its own usage metrics to its server (from an
    exit hook) unless the process-wide mode is offline too; a server that accepts but never
    answers held each run's exit for 10 s. Here the server is a socket of this test's that
    nobody answers: after the process has ended, no connection may be waiting on it."""
    import select
    import socket

    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env.pop("WANDB_MODE", None)  # a user's environment: wandb's own default mode (online)
        env["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-c", OFFLINE_RUN, str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert list((tmp_path / "wandb").glob("offline-run-*/*.wandb")), "nothing was logged"
        waiting, _, _ = select.select([server], [], [], 0)
        assert not waiting, "an offline run connected to wandb's server"


def test_an_image_whose_outputs_are_not_finite_scores_as_wrong(caplog):
    """argmax picks a NaN's class (0 for all-NaN outputs): a network overflowing in evaluation
    mode scored the share of class-0 images; now those images are wrong, and the run says why."""
    import math
    from contextlib import nullcontext
    from types import SimpleNamespace

    import torch

    from equinorm.train.trainer import Trainer, score

    class Images:
        def iterate(self, epoch):
            yield torch.zeros(4, 3), torch.tensor([0, 0, 0, 2])

    def model(x):  # predicts class 0; image 1's outputs overflowed
        out = torch.tensor([[1.0, 0.0, 0.0]]).repeat(len(x), 1)
        out[1] = float("nan")
        return out

    scores = score(model, {"test": Images()}, nullcontext, "cpu")
    assert scores["test_acc"] == 50.0 and math.isnan(scores["test_loss"])  # was 75
    row = {"epoch": 3, "train_loss": 0.5, **scores, "val_loss": 1.0}
    history, main = [], SimpleNamespace(is_main=True)
    trainer = SimpleNamespace(state=SimpleNamespace(history=history), dist=main)
    for _ in range(2):  # as end_epoch: the row joins the history, then is said
        history.append(row)
        Trainer._say_overflow(trainer, row)
    (said,) = [r.getMessage() for r in caplog.records]  # once a run
    assert said.startswith("epoch 3: the test loss is not finite while the training loss is")


def test_evaluation_shows_a_progress_bar_per_split(monkeypatch):
    """The training epoch had a bar and the evaluation none: ImageNet's 50,000 test images sat
    minutes after the bar closed without a sign."""
    from contextlib import nullcontext

    import torch

    from equinorm.train.trainer import score

    class Images:
        def __init__(self, batches):
            self.batches = batches

        def __len__(self):
            return self.batches

        def iterate(self, epoch):
            for _ in range(self.batches):
                yield torch.zeros(2, 3), torch.tensor([0, 1])

    shown = []

    class Bar:  # as tqdm is called
        def __init__(self, total, desc, **kwargs):
            shown.append([desc, total, 0, False])

        def update(self):
            shown[-1][2] += 1

        def close(self):
            shown[-1][3] = True

    splits = {"test": Images(3), "val": Images(2)}
    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    score(lambda x: torch.zeros(len(x), 3), splits, nullcontext, "cpu", "epoch 2/5")
    assert shown == [["epoch 2/5 test", 3, 3, True], ["epoch 2/5 val", 2, 2, True]]
    shown.clear()
    score(lambda x: torch.zeros(len(x), 3), splits, nullcontext, "cpu")  # no label: no bar
    assert shown == []
