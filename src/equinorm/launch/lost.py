"""A job of submitit's launchers whose process ended without a result -- killed (SIGKILL: the
kernel's out-of-memory killer, ``kill -9``), its node lost, cancelled with ``scancel`` -- fails
alone, as a job that raised does (paper section 6.5's sweeps are 10 seeds x every cell: one lost
job must not cost the others).

Hydra's submitit launcher collects its jobs' results in one list (``job.results()`` for each), so
submitit's ``UncompletedJobError`` for the first lost job ended the whole sweep with a traceback:
no tally, the later batches never launched. While equinorm's sweeper waits on a batch (or a
searching sweeper on its trials, :mod:`equinorm.launch.search`), :func:`lost_jobs_fail_alone`
has such a job return a :class:`Lost` instead; :func:`equinorm.launch.sweeper.record_lost` writes
why into the run's ``error.json``, so the tally says "failed" with that line and a rerun of the
sweep resumes the run from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from hydra.core.utils import JobReturn, JobStatus

from equinorm.errors import EquinormError

#: how long a SLURM job without a result may show FAILED before it counts as lost, and how often
#: the scheduler is asked meanwhile: a job requeued at its time limit shows FAILED until the
#: requeue reaches the accounting records that sacct reads, which waits on its old step's end --
#: up to SLURM's KillWait (30 s by default) and more: a 30 s grace lost a requeued job in CI
GRACE_S, POLL_S = 120.0, 2.0


class JobLostError(EquinormError):
    """A job's process ended without a result (its ``error.json`` says how)."""


@dataclass
class Lost(JobReturn):
    """The return of a job that ended without a result; ``why``: one line."""

    why: str = ""


def why(job) -> str:
    """One line on ``job`` (a submitit job): what may have ended it, and where its log is."""
    return (
        "its process ended without a result (killed: out of memory, kill -9? its node lost, "
        f"or the job cancelled; submitit's state {job.state}); its log: {job.paths.stdout}"
    )


def scheduled_again(job, slurm: bool) -> bool:
    """Whether ``job``, which ended without a result, has one after all or is scheduled again.
    submitit's watcher keeps a finished state for good, so its cache is cleared (its public
    ``clear``) before each question; a SLURM job that shows FAILED is asked again for
    :data:`GRACE_S` (a cancelled one, CANCELLED, is lost at once)."""
    deadline = time.monotonic() + (GRACE_S if slurm else 0.0)
    while True:
        job.watcher.clear()
        if job.paths.result_pickle.exists() or not job.done(force_check=True):
            return True
        if time.monotonic() >= deadline or str(job.state).upper() != "FAILED":
            return False
        time.sleep(POLL_S)


@contextlib.contextmanager
def lost_jobs_fail_alone(lost: list[Lost] | None = None):
    """While open, a submitit job that has no result returns ``[Lost(...)]`` from ``results()``
    rather than raising (a job that raised keeps its own exception); each also goes to ``lost``.
    Its overrides are those Hydra's launcher submitted it with (the call's first argument). A job
    that the scheduler still has (requeued) is waited for again."""
    from submitit.core import core, utils
    from submitit.slurm.slurm import SlurmJob

    results = core.Job.results

    def tolerant(job):
        while True:
            try:
                return results(job)
            except utils.UncompletedJobError:
                # SLURM shows a job requeued at its time limit FAILED for a moment, between the
                # first attempt's end and the requeue: asked again, it is pending, so wait on
                if scheduled_again(job, isinstance(job, SlurmJob)):
                    continue
            overrides = list(job.submission().args[0])
            one = Lost(overrides=overrides, status=JobStatus.COMPLETED, why=why(job))
            if lost is not None:
                lost.append(one)
            return [one]

    core.Job.results = tolerant
    try:
        yield
    finally:
        core.Job.results = results
