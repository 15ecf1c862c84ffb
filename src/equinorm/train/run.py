"""One run from a composed config: decide (skip, resume, start), build, train, summarise.

1. Validate the config (:mod:`equinorm.train.validate`) -- before any data or GPU work.
2. Rank 0 inspects the run directory: a finished run (complete or diverged) with the same config is
   skipped at once and no file is touched; otherwise it takes the run's lock, checks an existing
   checkpoint's config and loads it (or refuses with the path and how to start afresh).
3. Everything is seeded from ``seed``; the model, data, optimizer, schedule and mixup are built;
   the :class:`~equinorm.train.trainer.Trainer` runs to the end, resuming where the checkpoint
   stopped.
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

from equinorm import provenance
from equinorm.data import build_loaders, seeding
from equinorm.data.loaders import source_of
from equinorm.errors import EquinormError
from equinorm.layers import get_norm
from equinorm.models import build_model
from equinorm.train import checkpoint as ckpt
from equinorm.train import distributed
from equinorm.train.cpus import cpu_budget
from equinorm.train.mixup import Mixup
from equinorm.train.optim import build_optimizer
from equinorm.train.rundir import FINISHED, RunDir, semantic_config
from equinorm.train.schedules import Schedule
from equinorm.train.signals import Preempted
from equinorm.train.trainer import Trainer
from equinorm.train.validate import (
    arch_kwargs,
    check_config,
    norm_options,
    resolve_device,
    virtual_devices,
)
from equinorm.train.wandb_logger import WandbLogger

log = logging.getLogger("equinorm")


class PartialRunError(EquinormError):
    pass


def seed_everything(seed: int) -> None:
    s = seeding.derive_seed(seed, seeding.INIT)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)  # noqa: NPY002 -- the legacy global RNG, for third-party code
    random.seed(s)


def _longer_schedule(rundir: RunDir, cfg: DictConfig, summary: dict) -> bool:
    """Whether the finished run in ``rundir`` is to be trained on to ``cfg.epochs`` (a longer
    schedule); False: skip it. One line where it cannot be continued."""
    if rundir.finished_as(cfg) is not None:
        return False  # the same run (a diverged one stays diverged whatever its length)
    rundir.check_same_config(cfg, but_epochs=True)  # what differs, in one line
    done = int(summary["epochs"])  # finished_as: complete, the same config, other epochs
    if cfg.epochs < done:
        raise PartialRunError(
            f"{rundir.path} finished {done} epochs, epochs={cfg.epochs} is fewer (its "
            "history.csv has every epoch); to train a shorter schedule from the start use another "
            "name=... or results_dir=..."
        )
    _check_continuation(rundir, cfg, done)
    if not ckpt.exists(rundir.checkpoint_path):
        raise PartialRunError(
            f"{rundir.path} finished {done} epochs but kept no checkpoint.pt to continue from "
            f"(train.checkpoint=false, or removed); to train {cfg.epochs} epochs from the start "
            "use another name=... or results_dir=..."
        )
    return True


def _check_continuation(rundir: RunDir, cfg: DictConfig, done: int) -> None:
    why = Schedule(cfg.schedule, done).continues_as(cfg.epochs)
    if why:
        raise PartialRunError(
            f"{rundir.path} was trained for epochs={done}; epochs={cfg.epochs} cannot continue it "
            f"({why}); to train {cfg.epochs} epochs from the start use another name=... or "
            "results_dir=..."
        )


def decide(rundir: RunDir, cfg: DictConfig) -> dict:
    """Rank 0: what to do with this run directory (``skip`` or ``train``, with a checkpoint).

    Nothing finished is ever overwritten: a complete run whose summary.json is missing or damaged
    gets it rebuilt from history.csv and model.pt; an unreadable checkpoint falls back to the
    previous epoch's; an unfinished run with no readable checkpoint is moved into
    ``quarantine-<time>/`` (said in the log) and started afresh. A different ``epochs`` continues
    the run where its schedule over the epochs trained stays the same (step, superconvergence
    without rescale: :meth:`Schedule.continues_as`), from its last checkpoint (kept at the end
    for that); otherwise one line.
    """
    summary = rundir.summary()
    if summary and summary.get("status") in FINISHED and not _longer_schedule(rundir, cfg, summary):
        return {"action": "skip", "summary": summary}
    if ckpt.exists(rundir.checkpoint_path) and not cfg.train.resume:
        raise PartialRunError(
            f"{rundir.path} holds an unfinished run (checkpoint.pt) and train.resume=false; "
            "set train.resume=true to continue it"
        )
    rundir.lock()
    try:
        summary = rundir.summary()  # it may have finished while we waited
        finished = summary and summary.get("status") in FINISHED
        if finished and not _longer_schedule(rundir, cfg, summary):
            rundir.unlock()
            return {"action": "skip", "summary": summary}
        rows = None if finished else rundir.rebuildable(cfg.epochs)
        if rows is not None:
            rundir.check_same_config(cfg)
            ident = {k: cfg[k] for k in ("name", "seed")}
            ident |= {k: cfg[k].name for k in ("dataset", "arch", "norm")}
            summary = rundir.rebuild_summary(rows, **ident)
            log.warning(
                "%s: summary.json was missing or unreadable; rebuilt it from history.csv and "
                "model.pt (a damaged one is kept as summary.json.bad)",
                rundir.path,
            )
            rundir.unlock()
            return {"action": "skip", "summary": summary}
        rundir.error_path.unlink(missing_ok=True)  # this attempt replaces the last one's failure
        notes = []  # said in the console now and in train.log once it is open
        if ckpt.exists(rundir.checkpoint_path):
            rundir.check_same_config(cfg, but_epochs=True)
            state, used = ckpt.load_latest(rundir.checkpoint_path, notes)
            if state is not None:
                if used != rundir.checkpoint_path:
                    notes.append(f"resuming from the previous epoch's checkpoint {used}")
                _resume_epochs(rundir, cfg, state, notes)
                return {
                    "action": "train",
                    "resume": True,
                    "checkpoint": str(used),
                    "state": state,
                    "notes": notes,
                }
        if any(p.exists() for p in (rundir.history_path, rundir.summary_path)):
            moved = rundir.quarantine()
            notes.append(
                f"{rundir.path} held an unfinished run with no readable checkpoint "
                f"(train.checkpoint=false, or damaged files); moved its files to {moved} and "
                "starting afresh"
            )
    except BaseException:
        rundir.unlock()
        raise
    rundir.write_config(cfg)  # nothing to protect yet: (re)write it
    return {"action": "train", "resume": False, "notes": notes}


def _resume_epochs(rundir: RunDir, cfg: DictConfig, state: dict, notes: list) -> None:
    """A checkpoint trained under another ``epochs``: continue only where the schedule over the
    epochs trained is the same (then the config on disk takes the new ``epochs``)."""
    before = rundir.stored_epochs()
    if before is None or before == cfg.epochs:
        return
    _check_continuation(rundir, cfg, before)
    if state["epoch"] > cfg.epochs:
        raise PartialRunError(
            f"{rundir.path} has trained {state['epoch']} epochs already, epochs={cfg.epochs} is "
            "fewer; use another name=... or results_dir=..."
        )
    notes.append(
        f"epochs {before} -> {cfg.epochs}: continuing from epoch {state['epoch']} (the "
        f"{cfg.schedule.name} schedule over the epochs trained is unchanged, so this equals a "
        f"{cfg.epochs}-epoch run from the start)"
    )
    rundir.write_config(cfg)


def dataset_node(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.dataset, resolve=True)


def prepare_data(cfg: DictConfig, dist, device) -> None:
    """Check (and download, on rank 0 only) the dataset's files; other ranks wait for it."""
    if dist.is_main:
        source_of(dataset_node(cfg)).prepare()
    if dist.enabled:
        torch.distributed.barrier()


def _auto(value, default: bool) -> bool:
    return default if value == "auto" else bool(value)


def run(cfg: DictConfig) -> dict:
    """Run (or skip, or resume) the run that ``cfg`` describes; returns its summary."""
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    dist = distributed.init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    log.setLevel(logging.INFO if dist.is_main else logging.WARNING)  # only rank 0 reports
    rundir = RunDir(cfg.run_dir)
    try:
        virtual_devices(cfg, dist.world_size)  # a bad split fails before any file is written
        prepare_data(cfg, dist, device)  # missing data fails before the run directory is touched
        decision = {"action": "error"}
        if dist.is_main:
            try:
                decision = decide(rundir, cfg)
            finally:
                shared = {k: v for k, v in decision.items() if k != "state"}
                distributed.broadcast(shared, device)
        else:
            decision = distributed.broadcast(None, device)
        if decision["action"] == "error":
            raise EquinormError("rank 0 could not start this run (see its message)")
        if decision["action"] == "skip":
            s = decision["summary"]
            log.info(
                "%s is %s (epoch %s/%s, test acc %s): skipping",
                rundir.path,
                s["status"],
                s.get("epoch"),
                s.get("epochs"),
                s.get("test_acc"),
            )
            return s
        state = decision.get("state")
        if decision["resume"] and state is None:  # ranks > 0 read rank 0's checkpoint file
            state = ckpt.load(Path(decision["checkpoint"]))
        summary = _train(cfg, device, dist, rundir, state, decision.get("notes", ()))
        if summary.get("status") == "complete":
            acc = {k: summary.get(k) for k in ("test_acc", "best_test_acc")}
            acc = {k: f"{v:.2f}" if isinstance(v, float) else "n/a" for k, v in acc.items()}
            log.info(
                "complete: test acc %s (best %s) after %d epochs, %.0f s of training; %s",
                acc["test_acc"],
                acc["best_test_acc"],
                summary["epoch"],
                summary["wall_time_s"],
                rundir.path,
            )
        return summary
    finally:
        rundir.unlock()
        distributed.shutdown()


def _train(cfg, device, dist, rundir: RunDir, state: dict | None, notes=()) -> dict:
    torch.set_num_threads(cfg.train.threads or cpu_budget())
    if device.type == "cuda":  # fixed shapes: cuDNN times its algorithms once per shape, keeps the
        torch.backends.cudnn.benchmark = True  # fastest (recorded in provenance.json)
    file_log = None
    if dist.is_main:
        file_log = logging.FileHandler(rundir.log_path)
        file_log.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        logging.getLogger().addHandler(file_log)
        for note in notes:
            log.warning("%s", note)
        provenance.start_attempt(rundir.path, device, dist.world_size)
    outcome = "failed"
    try:
        summary = _build_and_fit(cfg, device, dist, rundir, state)
        outcome = summary.get("status", "complete")
        return summary
    except (Preempted, KeyboardInterrupt, SystemExit):  # SystemExit: submitit requeued the job
        outcome = "stopped"
        raise
    finally:
        if dist.is_main:
            provenance.end_attempt(rundir.path, outcome)
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()


def _build_and_fit(cfg, device, dist, rundir, state):
    t = cfg.train
    cuda = device.type == "cuda"
    precision = ("bf16" if cuda else "fp32") if t.precision == "auto" else t.precision
    k = virtual_devices(cfg, dist.world_size)
    global_batch = t.batch_size * k * dist.world_size
    channels_last = _auto(t.channels_last, cuda)
    progress = _auto(t.progress, sys.stderr.isatty())
    log.info(
        "%s: %s %s %s seed=%d on %s (%s, %d CPU threads; batch %d = %d process(es) x %d "
        "device(s) x %d)%s",
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
        " -- resuming" if state else "",
    )

    seed_everything(cfg.seed)
    norm = get_norm(cfg.norm.name, **norm_options(cfg))
    data = build_loaders(
        dataset_node(cfg),
        prepare=False,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        seed=cfg.seed,
        device=device,
        standardize_default=norm.standardize_input,
        channels_last=channels_last,
        rank=dist.rank,
        world_size=dist.world_size,
        virtual_devices=k,
        max_train_batches=t.max_train_batches,
        max_eval_batches=t.max_eval_batches,
    )
    model = build_model(
        cfg.arch.name,
        norm,
        data.info.num_classes,
        in_channels=data.info.channels,
        **arch_kwargs(cfg),
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
        train_model = torch.compile(train_model)
        eval_model = torch.compile(model)

    group = str(Path(cfg.run_path).parent)  # <experiment>/<dataset>-<arch>-<norm>[/<variant>]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = WandbLogger(
        cfg.wandb,
        run_path=str(Path(cfg.run_dir).resolve()),
        group=group,
        name=f"seed={cfg.seed}",
        config=resolved,
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
        progress=progress,
        equilibrium=t.equilibrium_stats,
        semantic_config=semantic_config(cfg),
        summary_fields={
            "name": cfg.name,
            "dataset": cfg.dataset.name,
            "arch": cfg.arch.name,
            "norm": cfg.norm.name,
            "seed": cfg.seed,
            "world_size": dist.world_size,
            "virtual_devices": k,
            "batch_size": t.batch_size,
            "global_batch": global_batch,
            "width_mult": cfg.arch.width_mult,
            "device": str(device),
            "host": socket.gethostname(),
            "precision": precision,
        },
    )
    if state is not None:
        trainer.load_state_dict(state)
        logger.replay(trainer.logged_so_far())  # offline wandb: one directory holds every epoch
        log.info("resumed at epoch %d, batch %d", trainer.state.epoch + 1, trainer.state.batch)
    try:
        return trainer.fit()
    except BaseException:
        logger.finish(exit_code=1)
        raise
