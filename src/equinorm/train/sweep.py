"""A sweep that survives its jobs: one bad run never stops the rest (the paper's 10 seeds per
configuration, section 6.5, are 70 jobs for CIFAR-10 alone).

Inside a multirun a job that fails records why in ``<run_dir>/error.json`` and returns, so that
the launcher starts the next job (:func:`record_failure`). :class:`SweepCallback`, a Hydra
callback, snapshots every job's run directory when the sweep starts and, when it ends, tells each
job's outcome apart -- complete, diverged, skipped (finished before the sweep), failed (with its
one line), in use by another process, or stopped -- prints the tally, writes it to
``<results_dir>/sweeps/<start time>.txt`` beside the sweep's ``multirun.yaml``, and exits 1 when a
job failed (0 otherwise). It reads only files, so jobs that ran elsewhere (submitit on SLURM)
count the same as local ones.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import re
import socket
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from equinorm.train.rundir import ERROR_FILE

log = logging.getLogger("equinorm")

ORDER = ("complete", "diverged", "skipped", "failed", "in use", "stopped")


# "equinorm.errors.DatasetError: " heading the last line of a traceback re-raised from a
# DataLoader worker (torch puts the worker's whole traceback into the message)
_QUALIFIED = re.compile(r"^(?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*(?:Error|Exception): ")


def one_line(exc: BaseException) -> str:
    """The last line of an exception's message (a user error's sentence), or its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return _QUALIFIED.sub("", lines[-1]) if lines else type(exc).__name__


def record_failure(run_dir: str | Path, exc: BaseException) -> None:
    """Write ``error.json`` (time, host, error type and one-line message) into the job's run
    directory; a directory that cannot be written is said in the log instead."""
    record = {
        "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "type": type(exc).__name__,
        "error": one_line(exc),
    }
    path = Path(run_dir) / ERROR_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{ERROR_FILE}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as write_error:
        log.warning("could not record the failure in %s (%s)", path, write_error)


@dataclass
class Job:
    overrides: list[str]
    run_dir: Path
    before: tuple  # (summary.json, error.json) contents when the sweep started


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _state(run_dir: Path) -> tuple:
    return _read(run_dir / "summary.json"), _read(run_dir / ERROR_FILE)


def _parse(summary_text: str | None) -> dict:
    try:
        return json.loads(summary_text) if summary_text else {}
    except ValueError:
        return {}


def _in_use(run_dir: Path) -> bool:
    try:
        fd = os.open(run_dir / ".lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def outcome(job: Job) -> tuple[str, str]:
    """(outcome, detail) of a job from its run directory now and when the sweep started."""
    summary, error = _state(job.run_dir)
    parsed = _parse(summary)
    status = parsed.get("status")
    if error is not None and error != job.before[1]:
        try:
            return "failed", json.loads(error).get("error", "")
        except ValueError:
            return "failed", f"unreadable {job.run_dir / ERROR_FILE}"
    if status in ("complete", "diverged"):
        if summary == job.before[0]:
            return "skipped", f"{status} before this sweep"
        if "rebuilt" in parsed and _parse(job.before[0]).get("status") != status:
            return "skipped", "finished before this sweep; its summary.json was rebuilt"
        return status, ""
    if _in_use(job.run_dir):
        return "in use", "another process holds the run (its lock)"
    return "stopped", "not finished and no error recorded (see its train.log)"


def _varying(jobs: list[Job]) -> set[str]:
    """The override keys whose values differ between the jobs (what names a job in the tally)."""
    values: dict[str, set[str]] = defaultdict(set)
    for job in jobs:
        for line in job.overrides:
            key, _, value = line.partition("=")
            values[key].add(value)
    return {k for k, v in values.items() if len(v) > 1}


def tally(jobs: list[Job]) -> tuple[str, int]:
    """The sweep's summary text and the number of failed jobs."""
    results = [(job, *outcome(job)) for job in jobs]
    varying = _varying(jobs)
    counts = Counter(kind for _, kind, _ in results)
    head = ", ".join(f"{counts[k]} {k}" for k in ORDER if counts[k]) or "no jobs"
    lines = [f"sweep of {len(jobs)} job(s): {head}"]
    by_reason: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job, kind, detail in results:
        if kind in ("failed", "in use", "stopped"):
            by_reason[(kind, detail)].append(job)
    for (kind, detail), group in by_reason.items():
        named = [o for o in group[0].overrides if o.partition("=")[0] in varying]
        who = " ".join(named or group[0].overrides) or str(group[0].run_dir)
        more = f" (and {len(group) - 1} more job(s) alike)" if len(group) > 1 else ""
        lines.append(f"  {kind}: {who}{more}: {detail}")
    return "\n".join(lines), counts["failed"]


def expand(params, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides: the sweeper's ``params`` and the command line's, expanded by
    BasicSweeper's own code (the sweeper of every launcher here), so the same jobs it makes."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


_COMPOSED: dict[tuple[str, ...], DictConfig] = {}  # this process's sweep: overrides -> config


def job_config(config: DictConfig, overrides) -> DictConfig:
    """One job of the sweep that ``config`` starts, composed as the launcher will compose it --
    once per sweep: the tally's snapshot and the sweeper's finished-run filter share it."""
    key = tuple(overrides)
    if key not in _COMPOSED:
        loader = GlobalHydra.instance().config_loader()
        _COMPOSED[key] = loader.load_sweep_config(master_config=config, sweep_overrides=list(key))
    return _COMPOSED[key]


def job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """Every job of the sweep that ``config`` starts (a new sweep: composed afresh)."""
    _COMPOSED.clear()
    jobs = expand(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
    return [(overrides, job_config(config, overrides)) for overrides in jobs]


class SweepCallback(Callback):
    """Hydra callback (``hydra.callbacks.sweep`` in conf/train.yaml); see the module docstring."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.started = ""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        self.jobs = []
        for overrides, cfg in job_configs(config):
            run_dir = Path(cfg.run_dir)
            self.jobs.append(Job(overrides, run_dir, _state(run_dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not self.jobs:
            return
        text, failed = tally(self.jobs)
        print(text, file=sys.stderr, flush=True)
        self._keep(config, text)
        if failed:
            sys.exit(1)

    def _keep(self, config: DictConfig, text: str) -> None:
        """``<results_dir>/sweeps/<start>.txt`` and the sweep's ``multirun.yaml`` beside it (Hydra
        writes it into the sweep directory, where the next sweep would overwrite it)."""
        out = Path(config.results_dir) / "sweeps"
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{self.started}.txt").write_text(text + "\n")
            multirun = Path(config.hydra.sweep.dir) / "multirun.yaml"
            if multirun.is_file():
                os.replace(multirun, out / f"{self.started}.multirun.yaml")
        except OSError as exc:
            print(f"equinorm: could not write the sweep summary to {out} ({exc})", file=sys.stderr)
