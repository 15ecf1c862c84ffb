"""Hydra's basic sweeper, except that a job whose run is already finished is never launched.

Re-running a sweep is how a sweep is completed (paper section 6.5: 10 seeds per cell, filled in
as jobs finish); on a cluster every launched job costs a submission, a queue wait and the full
resource request just to decide to skip. This sweeper (``hydra/sweeper=equinorm``, the default in
conf/train.yaml) composes each job of a batch as the launcher would, and leaves out those whose run
directory holds a finished run of the same config (:meth:`equinorm.train.rundir.RunDir.finished_as`)
-- they count as completed, with their final accuracy. Everything else (an unfinished run, a
longer schedule, a config that differs: its job says why) is launched as before. Hydra finds
sweepers only in the ``hydra_plugins`` package, hence this module's place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus

from equinorm.train.rundir import RunDir
from equinorm.train.sweep import job_config

log = logging.getLogger("equinorm")


class _SkipFinished:
    """A launcher's stand-in that launches only the jobs whose run is not finished."""

    def __init__(self, launcher, config) -> None:
        self.launcher, self.config = launcher, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        finished: dict[int, JobReturn] = {}
        for i, overrides in enumerate(job_overrides):
            cfg = job_config(self.config, overrides)  # composed once: the tally has it too
            summary = RunDir(cfg.run_dir).finished_as(cfg)
            if summary is not None:
                finished[i] = JobReturn(
                    overrides=list(overrides),
                    cfg=cfg,
                    status=JobStatus.COMPLETED,
                    _return_value=summary.get("test_acc"),
                )
        todo = [o for i, o in enumerate(job_overrides) if i not in finished]
        if finished:
            log.info(
                "%d of %d job(s) already finished: not launched", len(finished), len(job_overrides)
            )
        launched = iter(self.launcher.launch(todo, initial_job_idx=initial_job_idx) if todo else [])
        return [finished[i] if i in finished else next(launched) for i in range(len(job_overrides))]


class SkipFinishedSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = _SkipFinished(self.launcher, config)
