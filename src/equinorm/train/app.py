"""The Hydra app: ``python -m equinorm.train key=value ...`` (console script ``equinorm-train``).

    python -m equinorm.train                                   # the demo's run (digits_demo)
    python -m equinorm.train experiment=cifar10_wrn_short norm=equi seed=3
    python -m equinorm.train -m experiment=cifar10_wrn_short   # its sweep: norms x 10 seeds
    python -m equinorm.train experiment=digits_demo debug=smoke
    torchrun --nproc_per_node=2 -m equinorm.train experiment=svhn_wrn_mixup norm=bn seed=0

Every job of the command line is composed and checked first (:mod:`equinorm.experiment.command`):
a bad key or value is one line on stderr and exit code 2, with no file written. A run stopped by
SIGTERM/SIGUSR1 or Ctrl-C exits with 128 + the signal number after writing its checkpoint (a job
of submitit's local launcher returns instead, so that its sweep goes on); in a ``-m`` sweep a
failing job records why and the others go on (:mod:`equinorm.launch.sweeper`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from equinorm import experiment
from equinorm.errors import EquinormError, machine_error, one_line
from equinorm.experiment.command import preflight
from equinorm.experiment.usage import maybe_help
from equinorm.run import provenance
from equinorm.run.jobs import record as record_job
from equinorm.run.record import RunDir, RunLockedError, objective
from equinorm.train import build, distributed
from equinorm.train.nonfinite import account
from equinorm.train.run import identity, run
from equinorm.train.signals import Preempted
from equinorm.train.wandb_logger import release

log = logging.getLogger("equinorm")
DEFAULT_EXPERIMENT = "digits_demo"  # what a command line without arguments runs


def _multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def task(cfg: DictConfig) -> float | None:
    """One Hydra job; returns its :func:`~equinorm.run.record.objective` for sweepers that
    optimise (final validation accuracy, else test accuracy; None: no result)."""
    runtime = HydraConfig.get()
    summary = None
    try:
        summary = _job(cfg, runtime)
        return objective(summary)
    finally:  # a searching sweeper's job says which run it was, for the sweep's tally
        if _multirun() and not experiment.enumerates(runtime.sweeper):
            skipped = bool(summary and "skipped" in summary)  # finished before: not trained
            job = (runtime.job.num, list(runtime.overrides.task), cfg.get("run_dir"), skipped)
            record_job(runtime.sweep.dir, *job)


def _job(cfg: DictConfig, runtime) -> dict | None:
    """Run the job; its summary, or None when it failed (a sweep's) or another process has it."""
    try:
        experiment.locate(cfg, runtime.runtime.choices)  # sets cfg.run_dir and cfg.variant
        summary = run(cfg, overrides=list(runtime.overrides.task))
        if summary.get("status") == "diverged" and cfg.train.fail_on_divergence:
            raise EquinormError(
                f"{cfg.run_dir} diverged in epoch {summary.get('diverged_epoch')}; first "
                f"non-finite value: {account(summary)}; "
                "train.fail_on_divergence=true makes that an error"
            )
    except RunLockedError as exc:
        if _multirun():  # another sweep owns this run: leave it to them, go on with the others
            log.warning("skipping: %s", exc)
            return None
        _fail(exc)
    except Preempted as exc:
        if _multirun() and os.environ.get("SUBMITIT_EXECUTOR") == "local":
            # a signal submitit did not requeue on (SIGTERM to one job): the sweep waits on this
            # job's result, so it ends here and the others go on (it was the sweep's traceback)
            log.warning("%s: %s; run the sweep again to resume it", cfg.run_dir, exc)
            return None
        _say(f"equinorm: {exc}; {_how_to_resume()}")
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt:  # Ctrl-C outside training (building, loading) or pressed twice
        kept = (  # before the job had located its run: it has none yet
            f"{cfg.run_dir} keeps its last checkpoint, if any"
            if cfg.get("run_dir")
            else "this job had not begun its run"
        )
        _say(f"equinorm: interrupted (Ctrl-C); {kept}: run the same command again to resume")
        sys.exit(128 + signal.SIGINT)
    except Exception as exc:
        exc = machine_error(exc, cfg.get("run_dir")) or exc  # a full disk, a lost mount
        if not _multirun():
            if isinstance(exc, EquinormError):
                _fail(exc)
            raise  # a bug: keep its traceback
        if cfg.get("run_dir"):
            RunDir(cfg.run_dir).write_error(exc, **identity(cfg, cfg.get("variant")))
        if isinstance(exc, EquinormError):
            log.error("job failed: %s", one_line(exc))
        else:
            log.exception("job failed with an unexpected error (a bug? please report it)")
        return None
    return summary


def _say(text: str) -> None:
    """A last line on stderr; a closed one (``... | head``) must not turn a stop into a failed
    job that the sweep goes on from."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def _how_to_resume() -> str:
    if "SLURM_JOB_ID" in os.environ:  # preemption and time-outs requeue the job by themselves
        return (
            f"SLURM job {os.environ['SLURM_JOB_ID']}: a requeued job resumes from it by itself "
            "(a cancelled one: run the same command again)"
        )
    return "run the same command again to resume"


def _base_config_run(argv: list[str]) -> bool:
    """Whether ``argv`` trains conf/train.yaml itself: no ``experiment=`` and no flag (``--cfg``,
    ``-sc`` completion); said once under torchrun (its first process)."""
    flags = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
    named = any(a.lstrip("+").startswith("experiment=") for a in argv)
    return not flags and not named and os.environ.get("RANK", "0") == "0"


def _fail(exc: Exception) -> None:
    print(f"equinorm: error: {one_line(exc)}", file=sys.stderr, flush=True)
    sys.exit(2)


experiment.register()
hydra_main = hydra.main(
    version_base="1.3", config_path=str(experiment.CONF_DIR), config_name="train"
)(task)


def main() -> None:
    """Check every job of the command line, then run Hydra."""
    if maybe_help(sys.argv[1:]):
        sys.exit(0)
    if "--version" in sys.argv[1:]:  # Hydra's would name Hydra's
        print(provenance.version_line())
        sys.exit(0)
    if "--hydra-help" in sys.argv[1:]:  # Hydra composes its help without our config: keep only
        sys.argv[1:] = [a for a in sys.argv[1:] if a.startswith(("-", "hydra.", "hydra/"))]
    if len(sys.argv) == 1:  # a first try: the demo's run (seconds), not 300 full-width epochs
        sys.argv.append(f"experiment={DEFAULT_EXPERIMENT}")
        print(
            f"equinorm: no arguments: experiment={DEFAULT_EXPERIMENT}'s run (norm=equi seed=0); "
            "--help lists the experiments and options",
            file=sys.stderr,
        )
    try:
        problem = preflight(sys.argv[1:], lambda cfg: build.check(cfg, job=True))
    except KeyboardInterrupt:
        print(
            "equinorm: interrupted while checking the jobs; nothing was launched or written",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGINT)
    if problem:
        print(f"equinorm: error: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)
    if _base_config_run(sys.argv[1:]):  # `norm=bn` after a first try is not the demo's run
        print(
            "equinorm: no experiment=: the base config (conf/train.yaml: the paper's schedule, "
            f"full width) with these overrides; experiment={DEFAULT_EXPERIMENT} is the demo's",
            file=sys.stderr,
        )
    try:
        _hydra()
    except SystemExit as exc:
        distributed.leave(exc.code)  # a torchrun rank ends here; any other process goes on
        raise
    distributed.leave(0)


def _hydra() -> None:
    try:
        hydra_main()
    except KeyboardInterrupt:  # a sweep waiting on its jobs (submitit_local's: they got it too)
        _say(
            "equinorm: interrupted (Ctrl-C); each run keeps its last checkpoint: run the same "
            "command again to resume"
        )
        sys.exit(128 + signal.SIGINT)
    finally:  # whatever ended the process: wandb's service goes now, quietly, not in its atexit
        release()
