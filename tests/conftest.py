"""Shared test helpers: compose configs like the CLI does, fabricated datasets, the CLI itself."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# One torch thread per test process (this one and every CLI it starts; equinorm.train.cpus honours
# OMP_NUM_THREADS): on this 2-core machine, with the cores also busy with another training, two
# threads per process made OpenMP spin and a 4 s test took 228 s; one thread took 4.4 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ctrl-C as from a terminal, for this process and every CLI it starts: a suite started as `cmd &`
# by a shell without job control (`nohup make test &`) inherits SIGINT ignored, which Python and
# the trainer honour, so the tests of Ctrl-C would test an ignored one.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# A CLI that dies of a fatal signal (a C++ abort, a segfault) prints its threads' Python stacks:
# a DDP rank's rare abort at exit after a complete run has shown up only in whole-suite runs.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

import pytest
import torch

from equinorm import experiment
from equinorm.data.fabricate import write_cifar, write_imagenet, write_svhn

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

SAFE = ["wandb.mode=disabled", "train.progress=false"]

# A short digits run: 4 epochs of 23 batches, a second or so per epoch on two CPU cores.
SHORT = [
    "experiment=digits_demo",
    "norm=equi",
    "seed=2",
    "epochs=4",
    "schedule.milestones=[2,3]",
    "arch.width_mult=0.125",
    "train.equilibrium_stats=false",
]


def compose_cfg(*overrides: str, results: Path | None = None, return_hydra: bool = False):
    """The config ``python -m equinorm.train <overrides>`` would run (test-safe defaults), with
    its ``run_dir`` and ``variant``."""
    extra = list(SAFE)
    if results is not None:
        extra.append(f"results_dir={results}")
    return experiment.compose([*extra, *overrides], hydra=return_hydra)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """CIFAR-10/100, SVHN and ImageNet fabricated in their real on-disk formats."""
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", n_train=64, n_test=32)
    write_cifar(root, "cifar100", n_train=64, n_test=32)
    write_svhn(root, n_train=32, n_extra=32, n_test=32)
    write_imagenet(root, classes=3, per_class=6, size=40)
    return root


def fabricated(root: Path) -> list[str]:
    return [f"dataset.root={root}", "dataset.verify=false", "dataset.download=false"]


def run_cli(
    *args: str,
    cwd: Path,
    env: dict | None = None,
    timeout: float | None = None,
    module: str = "equinorm.train",
    launcher: list[str] | None = None,
):
    """Run the CLI in a subprocess until it exits (no wall-clock budget: pytest-timeout is the
    hang guard); returns the CompletedProcess (stdout+stderr in .stdout)."""
    cmd = (launcher or [sys.executable, "-m"]) + ([module] if module else []) + list(args)
    full_env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def read_history(run_dir: Path, drop=("epoch_time_s", "images_per_s")) -> list[dict]:
    with open(Path(run_dir) / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def run_dir_of(cfg) -> Path:
    return Path(cfg.run_dir)


def write_run(
    root: Path,
    experiment,
    config,
    seed,
    final_acc,
    *,
    status="complete",
    epochs=30,
    total=30,
    diverge_at=None,
    equilibrium=False,
    setup=None,
    variant=None,
):
    """A run whose test accuracy climbs linearly to ``final_acc`` at epoch ``total``, recorded as
    the trainer records one (its identity in summary.json); ``config`` is
    ``<dataset>-<arch>-<norm>``, ``variant`` the items its config sets otherwise; ``setup`` adds
    summary.json fields (world_size, virtual_devices, batch_size, global_batch, ...)."""
    from equinorm.experiment.identity import dirname

    dataset, arch, norm = config.split("-")
    cell = root / "runs" / experiment / config
    d = (cell / dirname(variant) if variant else cell) / f"seed={seed}"
    d.mkdir(parents=True)
    named = {"name": experiment, "dataset": dataset, "arch": arch, "norm": norm, "seed": seed}
    named["variant"] = dict(variant or {})
    lines = ["epoch,lr,momentum,train_loss,train_acc,test_loss,test_acc,epoch_time_s"]
    for e in range(1, epochs + 1):
        acc = final_acc * e / total
        loss = 2.0 - 1.9 * e / total
        if diverge_at and e == diverge_at:
            lines.append(f"{e},0.1,0.9,nan,10.0,nan,nan,nan")
            break
        lines.append(f"{e},0.1,0.9,{loss!r},{acc!r},{loss!r},{acc!r},1.0")
    (d / "history.csv").write_text("\n".join(lines) + "\n")
    last = {"test_acc": final_acc * epochs / total, "test_loss": 2.0 - 1.9 * epochs / total}
    summary = {"status": status, "epoch": epochs, "epochs": total, **last, **named, **(setup or {})}
    if status == "diverged":
        summary |= {"diverged_epoch": diverge_at, "test_acc": None, "test_loss": None}
    if status is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    else:  # a run that never wrote its summary: the config it started with says what it is
        parts = {"dataset": dataset, "arch": arch, "norm": norm}
        config_yaml = {**named, **{k: {"name": v} for k, v in parts.items()}}
        (d / "config.yaml").write_text(json.dumps(config_yaml))  # JSON is YAML
    if equilibrium:
        rows = ["epoch,layer,positive,negative"]
        for e in range(1, epochs + 1):
            rows += [f"{e},conv{i},{1 + 0.01 * i},{-1 - 0.01 * i}" for i in range(3)]
        (d / "equilibrium.csv").write_text("\n".join(rows) + "\n")
    return d
