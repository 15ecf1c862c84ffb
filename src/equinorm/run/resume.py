"""What to do with a run directory before training: skip a finished run, resume an interrupted
one from its checkpoint, or start afresh -- without ever overwriting a finished result.

A finished run (complete or diverged) of the same config is skipped without touching a file; a
complete run whose ``summary.json`` is missing or damaged gets it rebuilt from ``history.csv`` and
``model.pt`` where no checkpoint is left to end it from (one killed as it ended resumes from it);
an unreadable checkpoint falls back to the previous epoch's; an unfinished run with no readable
checkpoint is moved into ``quarantine-<time>/`` (said in the log) and started afresh -- unless it
stopped before its first epoch ended (nothing trained to keep: it starts again, its attempts kept
in provenance.json); a directory holding another config is refused in one line naming what
differs.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from equinorm.errors import EquinormError
from equinorm.run import checkpoint as ckpt
from equinorm.run import provenance
from equinorm.run.record import FINISHED, RunDir, setup

log = logging.getLogger("equinorm")


class PartialRunError(EquinormError):
    pass


def recorded_setup(rundir: RunDir, cfg: DictConfig) -> dict:
    """The training setup (:func:`~equinorm.run.record.setup`) of the run's last attempt, for a
    rebuilt summary: its processes and host from ``provenance.json``, the rest from the config it
    trained (the same as ``cfg``); {} where no attempt is recorded. The precision is the one the
    attempt recorded, else the config's where it is not ``auto`` (which depends on the device)."""
    attempts = provenance.read(rundir.path)
    last = attempts[-1] if attempts else {}
    if not isinstance(last.get("world_size"), int):
        return {}
    configured = getattr(cfg.train.precision, "value", cfg.train.precision)
    precision = last.get("precision") or (None if configured == "auto" else configured)
    return {**setup(cfg, last["world_size"], precision), "host": last.get("host")}


def decide(rundir: RunDir, cfg: DictConfig, identity: dict) -> dict:
    """Rank 0: ``{"action": "skip", "summary"}`` or ``{"action": "train", "resume", "state",
    "checkpoint", "notes"}``; holds the run's lock when it says train. ``identity`` (name,
    dataset, arch, norm, seed, variant) goes into a rebuilt summary."""
    summary = rundir.finished_as(cfg)
    if summary is not None:
        return {"action": "skip", "summary": summary}
    rundir.check_same_config(cfg)  # what differs, in one line
    if ckpt.exists(rundir.checkpoint_path) and not cfg.train.resume:
        raise PartialRunError(
            f"{rundir.path} holds an unfinished run (checkpoint.pt) and train.resume=false; "
            "set train.resume=true to continue it"
        )
    rundir.lock()
    try:
        summary = rundir.summary()  # it may have finished while we waited
        if summary and summary.get("status") in FINISHED:
            rundir.unlock()
            return {"action": "skip", "summary": summary}
        notes = []  # said in the console now and in train.log once it is open
        state, used = ckpt.load_latest(rundir.checkpoint_path, notes)  # (None, None): none
        # no checkpoint to end it from (one is left where a kill came between model.pt and the
        # summary: resumed, the run ends again, its summary whole)
        rows = rundir.rebuildable(cfg.epochs) if state is None else None
        if rows is not None:
            summary = rundir.rebuild_summary(rows, **identity, **recorded_setup(rundir, cfg))
            log.warning(
                "%s: summary.json was missing or unreadable; rebuilt it from history.csv and "
                "model.pt (a damaged one is kept as summary.json.bad)",
                rundir.path,
            )
            rundir.unlock()
            return {"action": "skip", "summary": summary}
        rundir.error_path.unlink(missing_ok=True)  # this attempt replaces the last one's failure
        if state is not None:
            if used != rundir.checkpoint_path:
                notes.append(f"resuming from the previous epoch's checkpoint {used}")
            return {
                "action": "train",
                "resume": True,
                "checkpoint": str(used),
                "state": state,
                "notes": notes,
            }
        if summary and summary.get("epoch") == 0 and not rundir.history():
            notes.append(f"{rundir.path} stopped before its first epoch ended: starting it again")
        elif any(p.exists() for p in (rundir.history_path, rundir.summary_path)):
            moved = rundir.quarantine()
            notes.append(
                f"{rundir.path} held an unfinished run with no readable checkpoint "
                f"(train.checkpoint=false, or damaged files); moved its files to {moved} and "
                "starting afresh"
            )
        rundir.write_config(cfg)  # nothing to protect yet: (re)write it
        rundir.write_summary(status="running", epoch=0, epochs=cfg.epochs, **identity)
    except BaseException:
        rundir.unlock()
        raise
    return {"action": "train", "resume": False, "notes": notes}


__all__ = ["PartialRunError", "decide"]
