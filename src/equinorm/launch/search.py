"""Sweepers that search (Optuna, Nevergrad, Ax: ``hydra/sweeper=optuna``, ``hparams_search=``)
rather than run a grid: a Hydra callback (``hydra.callbacks.search`` in conf/train.yaml) that
does for them what equinorm's sweeper does for its grid.

- At the start the sweeper's params lose the experiment's grid (its norms x seeds, see
  :func:`equinorm.experiment.sweep_params`), so trials search only what the command line or the
  preset gives; a search scored on the test set (no ``dataset.val_size``) is said in one line.
- Under submitit's local launcher each trial of a batch (``n_jobs``) uses its share of the CPUs
  (:func:`equinorm.launch.sweeper.local_batch`).
- Under submitit's launchers a trial whose process ended without a result (killed: out of
  memory, ``scancel``) is a failed trial, as under the grid sweeper (:mod:`equinorm.launch.lost`).
- A study kept in a storage (Optuna's ``storage`` and ``study_name``) and run again resumes the
  trials a stopped search left running, then draws new ones: its seeded sampler would draw the
  first run's values again, each a finished run skipped and a copy in the study, so its seed
  moves on by the trials the study holds (:func:`continued`); a storage without a study name is
  a new study each time, said in one line.
- At the end the jobs it launched (each records itself, :mod:`equinorm.run.jobs`) are tallied
  like a grid sweep's -- complete, diverged, failed with its one line -- into ``tally.txt`` beside
  the sweeper's own results (Optuna's ``optimization_results.yaml``); the command exits 1 when a
  job failed. A diverged trial returns None (:func:`equinorm.run.record.objective`): a failed
  trial in Optuna's study, not its end.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from equinorm import experiment
from equinorm.experiment.checks import submitit
from equinorm.launch.lost import Lost, lost_jobs_fail_alone
from equinorm.launch.sweeper import local_batch, located, record_lost, report_tally
from equinorm.run.jobs import recorded


class Search(Callback):
    """Does nothing under a grid sweeper (equinorm's tallies its own jobs)."""

    def __init__(self) -> None:
        self.lost: list[Lost] = []  # trials whose process ended without a result
        self.waiting = contextlib.ExitStack()

    def __getstate__(self) -> dict:  # submitit pickles it with each job: not what waits here
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if experiment.enumerates(config.hydra.sweeper):
            return
        launcher = submitit(config)
        if launcher:  # a lost trial is a failed one, not the search's end
            self.waiting.enter_context(lost_jobs_fail_alone(self.lost))
        if launcher == "local":
            local_batch(config, config.hydra.sweeper.get("n_jobs"))
        params = experiment.sweep_params(config)
        with read_write(config.hydra), open_dict(config.hydra.sweeper):
            config.hydra.sweeper.params = params
            continued(config.hydra.sweeper)
        if not config.dataset.get("val_size"):
            say(
                "the search is scored on the test set (no validation split): add "
                "dataset.val_size=N to score it on N held-out training images"
            )

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if experiment.enumerates(config.hydra.sweeper):
            return
        self.waiting.close()
        jobs = recorded(config.hydra.sweep.dir)  # as each job recorded itself: not a lost one
        for lost in self.lost:
            rundir, cfg = located(lambda o=lost.overrides: experiment.compose_raw(o))
            record_lost(lost, rundir, cfg)
            jobs.append((list(lost.overrides), rundir, False))
        report_tally(jobs, config.hydra.sweep.dir)


ASKED_AGAIN = "equinorm_asked_again"  # the study's note of the running trials asked again


def continued(sweeper: DictConfig) -> None:
    """A stored study run again (Optuna's sweeper builds its study and sampler after this
    callback): the trials a stopped search left running are asked again first, so their runs
    resume; and a seeded sampler's seed moves on by the trials the study holds, so
    that the rerun adds trials rather than copies of the first run's."""
    storage = sweeper.get("storage")
    if not storage or "study_name" not in sweeper:  # not a stored Optuna study
        return
    name = sweeper.study_name
    if name is None:
        say(
            "hydra.sweeper.storage without hydra.sweeper.study_name keeps this search as a new "
            "study; name it (hydra.sweeper.study_name=NAME) to add a later run's trials to it"
        )
        return
    import optuna  # the sweeper's own dependency: only when it is the sweeper

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet
        return
    held = len(study.trials)
    # left running: by a stopped search, or by one running now elsewhere, which Optuna cannot
    # tell apart (no heartbeat), so they are not failed; asked again once (noted in the study)
    asked = set(study.user_attrs.get(ASKED_AGAIN, []))
    running = optuna.trial.TrialState.RUNNING
    stopped = [t for t in study.trials if t.state == running and t.number not in asked]
    for trial in stopped:
        with warnings.catch_warnings():  # Optuna 2.10 calls enqueue_trial experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(trial.params)
    if stopped:
        study.set_user_attr(ASKED_AGAIN, sorted(asked | {t.number for t in stopped}))
        say(
            f"study {name!r}: {len(stopped)} trial(s) left running (a stopped search's) are "
            "asked again first: their runs resume"
        )
    seed = OmegaConf.select(sweeper, "sampler.seed")
    if held and seed is not None:  # an unseeded sampler draws anew anyway
        sweeper.sampler.seed = seed + held
        say(
            f"study {name!r} holds {held} trial(s): its sampler draws with seed {seed} + {held}, "
            "not the first run's values again"
        )


def say(line: str) -> None:
    print(f"equinorm: {line}", file=sys.stderr, flush=True)
