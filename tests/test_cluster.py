"""Scale-out through Hydra's submitit launcher: local jobs run; SLURM jobs get a GPU and requeue."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import compose_cfg, run_cli, run_dir_of

submitit = pytest.importorskip("submitit")


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    proc = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=digits_demo",
        "debug=smoke",
        "norm=bn,equi",
        "seed=0",
        f"results_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    for norm in ("bn", "equi"):
        run = compose_cfg("experiment=digits_demo", "debug=smoke", f"norm={norm}", results=tmp_path)
        assert json.loads((run_dir_of(run) / "summary.json").read_text())["status"] == "complete"
    (sweep,) = (tmp_path / "sweeps").iterdir()  # submitit's job logs with the sweep's record
    assert (sweep / ".submitit").is_dir() and (sweep / "tally.txt").is_file()


def test_slurm_launcher_asks_for_one_gpu_per_job_and_requeues(tmp_path, monkeypatch):
    """Drive the real Hydra launcher and submitit's SLURM executor; capture the sbatch script."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"  # submitit only checks that `srun` exists; it is never run here
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    cfg = compose_cfg(
        "hydra/launcher=submitit_slurm_gpu",
        "experiment=cifar10_wrn_short",
        "hydra.launcher.partition=gpu",
        results=tmp_path,
        return_hydra=True,
    )
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.max_num_timeout > 0
    scripts = []

    class Executor(submitit.AutoExecutor):
        def __init__(self, folder, cluster, **kwargs):
            super().__init__(folder=folder, cluster="slurm", **kwargs)

        def map_array(self, fn, *args):  # instead of calling sbatch
            slurm = self._executor
            scripts.append(slurm._make_submission_file_text("python -m equinorm.train", "uid"))
            assert slurm.max_num_timeout == cfg.hydra.launcher.max_num_timeout

            class Job:
                def results(self):
                    return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

            return [Job() for _ in args[0]]

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config, launcher.task_function, launcher.hydra_context = cfg, None, None
    launcher.launch([["norm=equi", "seed=0"], ["norm=bn", "seed=0"]], initial_job_idx=0)
    text = scripts[0]
    for line in (
        "--gpus-per-node=1",
        "--partition=gpu",
        "--time=1440",
        "--mem=64GB",
        "--cpus-per-task=8",
        f"--signal=USR2@{cfg.hydra.launcher.signal_delay_s}",
    ):
        assert line in text, line


def test_under_slurm_the_preemption_signal_is_guarded(monkeypatch):
    from equinorm.train.signals import _signals

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert signal.SIGUSR2 not in _signals()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert set(_signals()) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT}
