"""The sweeper of every ``-m`` command (``hydra/sweeper=equinorm``, the default): Hydra's basic
sweeper, except that a finished run is never launched again and the sweep ends with its tally.

Re-running a sweep is how a sweep is completed (paper section 6.5: 10 seeds per cell, filled in as
jobs finish); on a cluster every launched job costs a submission, a queue wait and the full
resource request just to decide to skip. So each job of a batch is composed as the launcher
composes it and left out when its run directory holds a finished run of the same config
(:meth:`equinorm.run.record.RunDir.finished_as`); it counts as done, with its accuracy. So is a
job whose run is an earlier job's (``schedule.lr=0.1,1e-1``: one config, one run).

A job that fails records why in its run directory (``error.json``) and returns, so that the
others go on (:mod:`equinorm.train.app`); so does, through this sweeper, a submitit job whose
process ended without a result (:mod:`equinorm.launch.lost`). At the end the tally -- complete,
diverged, skipped (finished before this sweep), failed (with its one line), in use by another
process, stopped -- is printed and kept in ``<results_dir>/sweeps/<time>/tally.txt`` beside the
sweep's ``multirun.yaml``; the command exits 1 when a job failed. It reads run records, so jobs
that ran elsewhere (submitit on SLURM) count the same as local ones. Hydra finds sweepers only in
the ``hydra_plugins`` package, which re-exports this one.

submitit's local launcher (``hydra/launcher=submitit_local``) starts every job it is handed at
once, each with torch's threads for the whole machine: four digits jobs on 2 CPUs ran their
epochs 15x slower than alone. So it is handed as many jobs as the CPUs hold
(``hydra.sweeper.max_batch_size``, default: CPUs / ``hydra.launcher.cpus_per_task``, 1 each;
one at a time on the GPUs it shows every job), and each job uses its share of the CPUs
(:func:`local_batch`, :mod:`equinorm.train.cpus`). Batches (``max_batch_size``) are cut from the
jobs left once the finished ones are skipped, so a rerun fills every batch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from equinorm import atomic, experiment
from equinorm.experiment.checks import submitit
from equinorm.launch.lost import JobLostError, Lost, lost_jobs_fail_alone
from equinorm.run.record import RunDir, objective
from equinorm.train.cpus import JOB_CPUS, cpus_here
from equinorm.train.run import identity

log = logging.getLogger("equinorm")
ORDER = ("complete", "diverged", "skipped", "failed", "in use", "stopped")


def outcome(rundir: RunDir | None, skipped: bool) -> tuple[str, str]:
    """(outcome, detail) of a job once the sweep is over."""
    if skipped:
        return "skipped", "finished before this sweep"
    if rundir is None:
        return "failed", "its config could not be composed"
    error = rundir.error()  # a launched job that fails says why; one that starts clears it
    if error is not None:
        return "failed", error.get("error", "")
    summary = rundir.summary() or {}
    if summary.get("rebuilt"):
        return "skipped", "finished before this sweep; its summary.json was rebuilt"
    status = rundir.status()
    if status in ("complete", "diverged", "in use"):
        return status, "another process holds the run (its lock)" if status == "in use" else ""
    return "stopped", "not finished and no error recorded (see its train.log)"


def tally(jobs: list[tuple[list[str], RunDir | None, bool]]) -> tuple[str, int]:
    """The sweep's summary text and the number of failed jobs; ``jobs``: (overrides, run
    directory, skipped) of each."""
    results = [(overrides, *outcome(rundir, skipped)) for overrides, rundir, skipped in jobs]
    values: dict[str, set[str]] = defaultdict(set)
    for overrides, *_ in results:
        for line in overrides:
            key, _, value = line.partition("=")
            values[key].add(value)
    varying = {k for k, v in values.items() if len(v) > 1}  # what tells the jobs apart
    counts = Counter(kind for _, kind, _ in results)
    head = ", ".join(f"{counts[k]} {k}" for k in ORDER if counts[k]) or "no jobs"
    lines = [f"sweep of {len(results)} job(s): {head}"]
    by_reason: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    for overrides, kind, detail in results:
        if kind in ("failed", "in use", "stopped"):
            by_reason[(kind, detail)].append(overrides)
    for (kind, detail), group in by_reason.items():
        named = [o for o in group[0] if o.partition("=")[0] in varying] or group[0]
        more = f" (and {len(group) - 1} more job(s) alike)" if len(group) > 1 else ""
        lines.append(f"  {kind}: {' '.join(named)}{more}: {detail}")
    return "\n".join(lines), counts["failed"]


def report_tally(jobs: list[tuple[list[str], RunDir | None, bool]], sweep_dir: str) -> None:
    """Print the :func:`tally` of a sweep's jobs, keep it in ``<sweep_dir>/tally.txt``; exit 1
    when a job failed."""
    text, failed = tally(jobs)
    print(text, file=sys.stderr, flush=True)
    out = Path(sweep_dir) / "tally.txt"
    try:
        atomic.write_text(out, text + "\n")
    except OSError as exc:
        print(f"equinorm: could not write {out} ({exc})", file=sys.stderr)
    if failed:
        sys.exit(1)


def local_batch(config, at_once: int | None) -> int:
    """Jobs that submitit's local launcher runs at once (``at_once``; else one where they are
    shown GPUs, which every job gets the same of; else as many as the CPUs hold at
    ``hydra.launcher.cpus_per_task`` per task, default 1); exports each job's CPUs."""
    launcher = config.hydra.launcher
    cpus, per_task, tasks = cpus_here(), launcher.get("cpus_per_task"), launcher.tasks_per_node
    held = 1 if launcher.get("gpus_per_node") else cpus // ((per_task or 1) * tasks)
    at_once = at_once or max(1, held)
    per_job = per_task * tasks if per_task else max(1, cpus // at_once)
    os.environ[JOB_CPUS] = str(per_job)  # the jobs' environment is this process's
    log.info(
        "submitit_local: %d job(s) at a time (hydra.sweeper.max_batch_size, or n_jobs of a "
        "search), %d CPU(s) each "
        "(hydra.launcher.cpus_per_task x tasks_per_node)",
        at_once,
        per_job,
    )
    return at_once


def located(compose) -> tuple[RunDir | None, DictConfig | None]:
    """(run directory, config) of the job whose config (with its Hydra node) ``compose()``
    returns, located as the job locates it; (None, None) if it cannot be composed."""
    try:
        cfg = compose()
        launcher = cfg.hydra.launcher  # submitit's tasks: the job's processes
        world = launcher.tasks_per_node * launcher.nodes if submitit(cfg) else None
        experiment.locate(cfg, cfg.hydra.runtime.choices, world)
    except Exception:
        return None, None
    return RunDir(cfg.run_dir), cfg


def record_lost(lost: Lost, rundir: RunDir | None, cfg: DictConfig | None) -> None:
    """Say that a job was lost (:mod:`equinorm.launch.lost`); its run's ``error.json`` says
    why, for the tally and the report."""
    log.error("job failed: %s: %s", " ".join(lost.overrides), lost.why)
    if rundir is not None:
        rundir.write_error(JobLostError(lost.why), **identity(cfg, cfg.variant))


class Sweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = _SkipFinished(self.launcher, self)
        self.jobs: list[tuple[list[str], RunDir | None, bool]] = []
        self.batch = self.max_batch_size  # cut by _SkipFinished from the jobs left to launch
        if submitit(config) == "local":
            self.batch = local_batch(config, self.max_batch_size)
        self.max_batch_size = None  # Hydra's one batch; ours are cut once finished jobs are skipped

    def job(self, overrides: Sequence[str]):
        """(run directory, config) of a job, composed as the launcher composes it; (None, None)
        if it cannot be (the job itself then fails and says why)."""
        return located(
            lambda: self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        )

    def sweep(self, arguments: list[str]):
        returns = super().sweep(arguments)
        report_tally(self.jobs, self.config.hydra.sweep.dir)
        return returns


class _SkipFinished:
    """A launcher's stand-in that launches only the jobs whose run is not finished."""

    def __init__(self, launcher, sweeper: Sweeper) -> None:
        self.launcher, self.sweeper = launcher, sweeper

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        finished: dict[int, JobReturn] = {}
        jobs = [self.sweeper.job(overrides) for overrides in job_overrides]
        known = {tuple(o): job for o, job in zip(job_overrides, jobs, strict=True)}
        seen = {rundir.path for _, rundir, _ in self.sweeper.jobs if rundir is not None}
        repeats = 0  # jobs whose run is an earlier job's (schedule.lr=0.1,1e-1: one config)
        for i, (overrides, (rundir, cfg)) in enumerate(zip(job_overrides, jobs, strict=True)):
            if rundir is None:
                continue
            summary, repeat = rundir.finished_as(cfg), rundir.path in seen
            seen.add(rundir.path)
            if summary is not None or repeat:
                repeats += summary is None
                finished[i] = JobReturn(
                    overrides=list(overrides),
                    status=JobStatus.COMPLETED,
                    _return_value=objective(summary) if summary else None,
                )
        todo = [o for i, o in enumerate(job_overrides) if i not in finished]
        if len(finished) > repeats:
            done = len(finished) - repeats
            log.info("%d of %d job(s) already finished: not launched", done, len(job_overrides))
        if repeats:
            log.info("%d job(s) the run of an earlier job (the same config): not launched", repeats)
        size = self.sweeper.batch or max(1, len(todo))
        launched = (  # batch by batch, as the sweep reaches them
            result
            for start in range(0, len(todo), size)
            for result in self._launch(todo[start : start + size], initial_job_idx + start, known)
        )
        self.sweeper.jobs += [
            (list(o), rundir, i in finished)
            for i, (o, (rundir, _)) in enumerate(zip(job_overrides, jobs, strict=True))
        ]
        return [finished[i] if i in finished else next(launched) for i in range(len(job_overrides))]

    def _launch(self, batch, initial_job_idx: int, known: dict) -> list[JobReturn]:
        """One batch; a job lost on the way (:mod:`equinorm.launch.lost`) records why in its run
        (``known``: each job's (run directory, config), by its overrides)."""
        with lost_jobs_fail_alone():
            results = list(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
        for result in results:
            if isinstance(result, Lost):
                record_lost(result, *known.get(tuple(result.overrides), (None, None)))
        return results
