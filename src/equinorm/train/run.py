"""One run from a composed config: check, decide (skip, resume, start), build, train, summarise.

1. Check the config (:func:`equinorm.train.build.check`) -- before any data or GPU work.
2. Rank 0 inspects the run directory (:func:`equinorm.run.resume.decide`): a finished run with the
   same config is skipped at once and no file is touched; otherwise it takes the run's lock and
   loads the checkpoint of an interrupted run.
3. Everything is seeded from ``seed`` and built (:func:`equinorm.train.build.trainer`); the
   :class:`~equinorm.train.trainer.Trainer` runs to the end, resuming where the checkpoint stopped.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from equinorm.data.loaders import source_of
from equinorm.errors import EquinormError, machine_error, one_line
from equinorm.experiment.checks import device as resolve_device
from equinorm.experiment.checks import virtual_devices
from equinorm.run import checkpoint as ckpt
from equinorm.run import provenance
from equinorm.run.record import RunDir
from equinorm.run.resume import decide
from equinorm.train import build, distributed
from equinorm.train.cpus import cpu_budget, cpu_share
from equinorm.train.signals import Preempted

log = logging.getLogger("equinorm")


def identity(cfg: DictConfig, variant: dict | None = None) -> dict:
    """What names the run, as summary.json and error.json record it for the reports."""
    return {
        "name": cfg.name,
        "dataset": cfg.dataset.name,
        "arch": cfg.arch.name,
        "norm": cfg.norm.name,
        "seed": cfg.seed,
        "variant": dict(variant or {}),
    }


def prepare_data(cfg: DictConfig, dist) -> None:
    """Check (and download, on rank 0 only) the dataset's files; other ranks wait for it."""
    if dist.is_main:
        source_of(OmegaConf.to_container(cfg.dataset, resolve=True, enum_to_str=True)).prepare()
    if dist.enabled:
        torch.distributed.barrier()


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run (or skip, or resume) the run that ``cfg`` describes (in ``cfg.run_dir``, set with its
    ``variant`` by :func:`equinorm.experiment.locate`); returns its summary. ``overrides``: the
    command line, for provenance."""
    build.check(cfg)
    variant = OmegaConf.to_container(cfg.variant) if cfg.get("variant") else {}
    device = resolve_device(cfg.train.device)
    dist = distributed.init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    log.setLevel(logging.INFO if dist.is_main else logging.WARNING)  # only rank 0 reports
    rundir = RunDir(cfg.run_dir)
    named = identity(cfg, variant)
    try:
        virtual_devices(cfg, dist.world_size)  # a bad split fails before any file is written
        prepare_data(cfg, dist)  # missing data fails before the run directory is touched
        decision = {"action": "error"}
        if dist.is_main:
            try:
                decision = decide(rundir, cfg, named)
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
                _percent(s.get("test_acc")),
            )
            return {**s, "skipped": True}  # finished before: not trained by this job
        state = decision.get("state")
        if decision["resume"] and state is None:  # ranks > 0 read rank 0's checkpoint file
            state = ckpt.load(Path(decision["checkpoint"]))
        summary = _train(cfg, device, dist, rundir, named, state, decision, overrides)
        if summary.get("status") == "complete":
            log.info(
                "complete: test acc %s (best %s) after %d epochs, %.0f s of training; %s",
                _percent(summary.get("test_acc")),
                _percent(summary.get("best_test_acc")),
                summary["epoch"],
                summary["wall_time_s"],
                rundir.path,
            )
        return summary
    except Preempted as exc:
        if dist.enabled and not exc.ended:  # every rank stopped at the same step (a signal to
            # any one stops them all): none leaves before rank 0 has recorded the stop, as
            # torchrun stops the other ranks once one has ended with a failure
            torch.distributed.barrier()
        raise
    finally:
        rundir.unlock()
        distributed.shutdown()


def _last_words(handler: logging.FileHandler, exc: Exception, run_dir: Path) -> None:
    """End the run's train.log with why it failed, as the console says it (the job logs that
    there): the one line of the suite's and the machine's errors, else a bug's traceback."""
    exc = machine_error(exc, run_dir) or exc
    if isinstance(exc, EquinormError):
        why, trace = f"failed: {one_line(exc)}", None
    else:
        why = "failed with an unexpected error (a bug? please report it)"
        trace = (type(exc), exc, exc.__traceback__)
    fields = {"name": log.name, "levelno": logging.ERROR, "levelname": "ERROR"}
    record = logging.makeLogRecord({**fields, "msg": why, "exc_info": trace})
    with contextlib.suppress(OSError, ValueError):  # a full disk: the error itself goes on
        handler.stream.write(handler.format(record) + handler.terminator)
        handler.stream.flush()


def _percent(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "n/a"


def _train(cfg, device, dist, rundir, named, state, decision, overrides) -> dict:
    threads = cfg.train.threads or cpu_budget()
    torch.set_num_threads(threads)  # before provenance records it
    if device.type == "cuda":  # fixed shapes: cuDNN times its algorithms once per shape, keeps the
        torch.backends.cudnn.benchmark = True  # fastest (recorded in provenance.json)
    file_log = None
    if dist.is_main:
        file_log = logging.FileHandler(rundir.log_path)
        file_log.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        logging.getLogger().addHandler(file_log)
        for note in decision.get("notes", ()):
            log.warning("%s", note)
        impl = getattr(cfg.norm.get("impl"), "value", None)  # EquiNorm's only
        layout = build.resolve_channels_last(cfg, device)
        compiled = bool(cfg.train.compile)
        execution = {
            "precision": build.resolve_precision(cfg, device),  # a rebuilt summary reads it
            "channels_last": layout,
            "compile": compiled,
            "compile_mode": cfg.train.compile_mode.value if compiled else None,
            "impl": impl,
        }
        provenance.start_attempt(  # results_dir: runs inside the checkout are not its code
            rundir.path, device, dist.world_size, overrides, cfg.results_dir, **execution
        )
    share = cpu_share()
    if threads > share:  # a step collapses, it does not just slow down
        said = "train.threads=%d" if cfg.train.threads else "OMP_NUM_THREADS=%d (environment)"
        log.warning(
            said + " is more than the %d CPU(s) this process may use: OpenMP threads that "
            "outnumber cores wait on each other (train.threads=%d fits them)",
            threads,
            share,
            share,
        )
    if cfg.norm.name == "ws_gn" and cfg.arch.get("final_norm") is False:
        log.warning(
            "norm=ws_gn on %s without arch.final_norm=true: the classifier reads a residual "
            "stream about sqrt(fan) times larger than under the other norms; on the demo lr 0.003 "
            "to 0.1 diverged or stayed at chance (docs/spec.md section 2); arch.final_norm=true "
            "adds a norm-ReLU before pooling (give every norm it, to compare one network)",
            cfg.arch.name,
        )
    outcome = "failed"
    try:
        trainer, logger = build.trainer(cfg, device, dist, rundir, named)
        if state is not None:
            trainer.load_state_dict(state)
            logger.replay(trainer.logged_so_far())  # offline wandb: one directory holds every epoch
            log.info("resumed at epoch %d, batch %d", trainer.state.epoch + 1, trainer.state.batch)
        try:
            summary = trainer.fit()
        except BaseException:
            logger.finish(exit_code=1)
            raise
        outcome = summary.get("status", "complete")
        return summary
    except (Preempted, KeyboardInterrupt, SystemExit):  # SystemExit: submitit requeued the job
        outcome = "stopped"
        raise
    except Exception as exc:
        if file_log is not None:
            _last_words(file_log, exc, rundir.path)
        raise
    finally:
        if dist.is_main:
            try:
                provenance.end_attempt(rundir.path, outcome)
            except OSError as exc:  # a full disk: the training's own error, if any, goes on
                log.warning("could not record the attempt's end in provenance.json: %s", exc)
        if file_log is not None:
            logging.getLogger().removeHandler(file_log)
            file_log.close()


__all__ = ["identity", "run"]
