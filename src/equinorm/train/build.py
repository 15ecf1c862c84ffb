"""Everything a run trains with, built from its config: seeds, model, data, optimizer, schedule,
mixup, logger and the :class:`~equinorm.train.trainer.Trainer` (paper section 6: the recipe).

:func:`check` is every check of a config short of touching data or files -- the experiment's
(:func:`equinorm.experiment.checks.check_config`) and those the schedule and mixup own, by
building them -- and what the command line runs on each job before Hydra starts.
"""

from __future__ import annotations

import logging
import random
import socket
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from equinorm.data import build_loaders, seeding
from equinorm.experiment.checks import check_config, check_job
from equinorm.layers import get_norm
from equinorm.layers.affine import group_fallbacks
from equinorm.models.compiling import compiled
from equinorm.run.record import RunDir, setup
from equinorm.run.trained import network
from equinorm.train.distributed import DistInfo
from equinorm.train.mixup import Mixup
from equinorm.train.optim import build_optimizer
from equinorm.train.schedules import Schedule
from equinorm.train.trainer import Trainer
from equinorm.train.wandb_logger import WandbLogger

log = logging.getLogger("equinorm")


def check(cfg: DictConfig, job: bool = False, devices_here: bool = True) -> None:
    """Raise :class:`~equinorm.errors.ConfigError` for the first bad value of ``cfg`` (``job``: a
    command line's job, with its Hydra node: the launcher and the results directory too;
    ``devices_here=False``: a plan for another machine, ``train.device`` only spelt right)."""
    if job:
        check_job(cfg)
    else:
        check_config(cfg, devices_here)
    Schedule(cfg.schedule, cfg.epochs)
    Mixup(cfg.mixup, seed=0)


def seed_everything(seed: int) -> None:
    s = seeding.derive_seed(seed, seeding.INIT)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 -- the legacy global RNG, for third-party code
    random.seed(s)


def _auto(value, default: bool) -> bool:
    return default if value == "auto" else bool(value)


def resolve_channels_last(cfg: DictConfig, device: torch.device) -> bool:
    """``train.channels_last`` on ``device`` (``auto``: on CUDA)."""
    return _auto(cfg.train.channels_last, device.type == "cuda")


def resolve_precision(cfg: DictConfig, device: torch.device) -> str:
    """``train.precision`` on ``device``: fp32 or bf16 (``auto``: bf16 autocast on CUDA)."""
    value = getattr(cfg.train.precision, "value", cfg.train.precision)  # a str Enum, or a str
    return ("bf16" if device.type == "cuda" else "fp32") if value == "auto" else value


def loaders(cfg: DictConfig, device, *, prepare=False, channels_last=False, training=True, **ranks):
    """The run's loaders (train unless not ``training``, test and its validation split) on
    ``device``; ``ranks``: rank, world_size and virtual_devices of a data-parallel run."""
    t = cfg.train
    return build_loaders(
        OmegaConf.to_container(cfg.dataset, resolve=True, enum_to_str=True),
        prepare=prepare,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        seed=cfg.seed,
        device=device,
        standardize_default=get_norm(cfg.norm.name).standardize_input,
        channels_last=channels_last,
        max_train_batches=t.max_train_batches,
        max_eval_batches=t.max_eval_batches,
        training=training,
        **ranks,
    )


def trainer(
    cfg: DictConfig, device, dist: DistInfo, rundir: RunDir, identity: dict
) -> tuple[Trainer, WandbLogger]:
    """The run's trainer (and its wandb logger), seeded, on ``device``."""
    t = cfg.train
    cuda = device.type == "cuda"
    precision = resolve_precision(cfg, device)
    fields = setup(cfg, dist.world_size, precision)  # summary.json's setup, and the log's
    k, global_batch = fields["virtual_devices"], fields["global_batch"]
    channels_last = resolve_channels_last(cfg, device)
    log.info(
        "%s: %s %s %s seed=%d on %s (%s, %d CPU thread(s); batch %d = %d process(es) x %d "
        "device(s) x %d)",
        cfg.name,
        cfg.dataset.name,
        cfg.arch.name,
        cfg.norm.name,
        cfg.seed,
        device,
        precision,
        torch.get_num_threads(),
        global_batch,
        dist.world_size,
        k,
        t.batch_size,
    )
    seed_everything(cfg.seed)
    data = loaders(
        cfg,
        device,
        channels_last=channels_last,
        rank=dist.rank,
        world_size=dist.world_size,
        virtual_devices=k,
    )
    model = network(cfg)
    fell = group_fallbacks(model)
    if fell and dist.is_main:
        log.warning(
            "norm.groups does not divide every GroupNorm layer's channels, which then have "
            "fewer groups: %s; a divisor of every width gives the groups asked for",
            fell,
        )
    model = model.to(
        device, memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    schedule = Schedule(cfg.schedule, cfg.epochs)
    lr0, mom0 = schedule(0.0)
    optimizer = build_optimizer(model, cfg.optim, lr0, mom0)
    # one mixup stream per device, numbered as DDP ranks would be
    mixup = [Mixup(cfg.mixup, cfg.seed, dist.rank * k + j, model.mix_points) for j in range(k)]
    train_model, eval_model = model, model
    if dist.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if cuda else None
        )
    if t.compile:
        train_model = compiled(train_model, t.compile_mode)
        eval_model = compiled(model, t.compile_mode)
    # wandb: group = <experiment>/<dataset>-<arch>-<norm>[/<variant>], name = seed=<k>
    cell = rundir.path.parent.relative_to(Path(cfg.results_dir) / "runs")
    logger = WandbLogger(
        cfg.wandb,
        run_path=str(rundir.path.resolve()),
        group=str(cell),
        name=f"seed={cfg.seed}",
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        enabled=dist.is_main,
    )
    trainer = Trainer(
        model=train_model,
        raw_model=model,
        eval_model=eval_model,
        optimizer=optimizer,
        schedule=schedule,
        mixup=mixup,
        data=data,
        epochs=cfg.epochs,
        device=device,
        precision=precision,
        rundir=rundir,
        dist=dist,
        logger=logger,
        checkpoint=t.checkpoint,
        progress=_auto(t.progress, sys.stderr.isatty()),
        equilibrium=t.equilibrium_stats,
        summary_fields={
            **identity,
            **fields,
            "device": str(device),
            "host": socket.gethostname(),
        },
    )
    return trainer, logger


__all__ = [
    "check",
    "loaders",
    "resolve_channels_last",
    "resolve_precision",
    "seed_everything",
    "trainer",
]
