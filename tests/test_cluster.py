"""Scale-out through Hydra's submitit launcher: local jobs run; SLURM jobs get a GPU and requeue."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from equinorm.errors import ConfigError
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


def test_submitit_local_runs_a_batch_the_cpus_hold_and_its_tasks_as_ddp(tmp_path):
    """submitit's local executor started every job at once, each with torch's threads for the
    whole machine (4 digits jobs on 2 CPUs: epochs 15x slower), and a job's 2 tasks as 2 copies
    of one run (the second skipped it as "in use")."""
    per_task = max(1, len(os.sched_getaffinity(0)) // 2)  # 2 tasks of it: one job at a time
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]
    args += [f"hydra.launcher.cpus_per_task={per_task}", "experiment=digits_demo", "debug=smoke"]
    args += ["norm=bn,equi", "seed=0", f"results_dir={tmp_path}"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "submitit_local: 1 job(s) at a time" in proc.stdout
    attempts = []
    for summary in (tmp_path / "runs").rglob("summary.json"):
        assert "train.devices=2" in str(summary)  # its identity: the global batch of 2 ranks
        assert json.loads(summary.read_text())["world_size"] == 2
        (attempt,) = json.loads((summary.parent / "provenance.json").read_text())["attempts"]
        attempts.append((attempt["start"], attempt["end"]))
    first, second = sorted(attempts)
    assert len(attempts) == 2 and second[0] >= first[1]  # one batch after the other
    again = run_cli(*args, cwd=tmp_path)
    assert "sweep of 2 job(s): 2 skipped" in again.stdout, again.stdout[-2000:]


@pytest.mark.parametrize(
    ("launcher", "batch", "at_once", "job_cpus"),
    [
        ({}, None, 8, 1),  # as many jobs as CPUs, one thread each
        ({"cpus_per_task": 2}, None, 4, 2),
        ({"tasks_per_node": 2}, None, 4, 2),  # 2 DDP processes of 1 CPU each
        ({}, 2, 2, 4),  # hydra.sweeper.max_batch_size=2 (or Optuna's n_jobs): a share each
        ({"gpus_per_node": 1}, None, 1, 8),  # every job gets GPU 0: one at a time
        ({"gpus_per_node": 1}, 3, 3, 2),  # unless asked
    ],
)
def test_submitit_local_batches_fit_the_machine(launcher, batch, at_once, job_cpus, monkeypatch):
    from omegaconf import OmegaConf

    from equinorm.launch import sweeper
    from equinorm.train.cpus import JOB_CPUS

    monkeypatch.setattr(sweeper, "cpus_here", lambda: 8)
    monkeypatch.delenv(JOB_CPUS, raising=False)
    node = {"cpus_per_task": None, "gpus_per_node": None, "tasks_per_node": 1, **launcher}
    assert sweeper.local_batch(OmegaConf.create({"hydra": {"launcher": node}}), batch) == at_once
    assert os.environ[JOB_CPUS] == str(job_cpus)


def test_submitit_local_shows_a_job_only_the_gpus_it_is_told_to(monkeypatch):
    """gpus_per_node unset: submitit's local jobs see CUDA_VISIBLE_DEVICES='', so
    train.device=auto trained a GPU machine's sweep on its CPU without a word."""
    from equinorm.experiment.checks import check_job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    def check(*overrides):
        check_job(compose_cfg("hydra/launcher=submitit_local", *overrides, return_hydra=True))

    hidden = r"shows each job 0 GPU\(s\) \(.*node=null\), so train.device=auto would train on"
    with pytest.raises(ConfigError, match=hidden):
        check("experiment=digits_demo")
    one = "hydra.launcher.gpus_per_node=1"
    with pytest.raises(ConfigError, match=r"cuda:1 would find no such device: set .*node=2 "):
        check(one, "train.device=cuda:1")
    check(one)  # auto: on GPU 0, the one shown
    check("train.device=cpu")
    # more than the machine has: CUDA skips ids past its GPUs, so a job's ranks 2, 3 found none
    with pytest.raises(ConfigError, match=r"gpus_per_node=4 exceeds the 2 GPU\(s\) of this"):
        check("hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4")
    check("hydra.launcher.gpus_per_node=2", "hydra.launcher.tasks_per_node=2")


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


def test_a_requeued_job_is_waited_for_not_taken_for_lost(tmp_path, monkeypatch):
    """A SLURM job requeued at its time limit (SIGUSR2) showed FAILED for a moment, between its
    first attempt's end and the requeue: submitit raised UncompletedJobError and the job was
    recorded lost ("1 failed") while it ran again. Asking again did not help at first: submitit's
    watcher keeps a state it has seen finished for good, and answered from that (a clean-clone
    CI's SIGUSR2 test failed so). Here sacct is a stand-in that shows each job's states in
    turn: a job SLURM has again is waited for; one cancelled, or FAILED past the grace, is lost."""
    from types import SimpleNamespace

    from submitit.core import core, utils
    from submitit.slurm import slurm

    from equinorm.launch import lost as lost_mod
    from equinorm.launch.lost import Lost, lost_jobs_fail_alone

    shown = {"8": ["FAILED", "FAILED", "PENDING"], "9": ["CANCELLED"], "10": ["FAILED"]}
    calls = []

    def sacct(command, shell=False):  # one job per watcher below: the job asked about
        job_id = command[command.index("-j") + 1]
        calls.append(job_id)
        states = shown[job_id]
        state = states.pop(0) if len(states) > 1 else states[0]
        return f"JobID|State|NodeList\n{job_id}|{state}|vm\n".encode()

    def results(job):  # the first attempt's end: the watcher sees it finished, no result
        if not job.asked:
            job.asked = True
            assert job.done(force_check=True)
            raise utils.UncompletedJobError(f"has not produced any output (state: {job.state})")
        return ["trained"]

    monkeypatch.setattr(core.subprocess, "check_output", sacct)
    monkeypatch.setattr(core.Job, "results", results)
    monkeypatch.setattr(
        slurm.SlurmJob, "submission", lambda job: SimpleNamespace(args=([f"seed={job.job_id}"],))
    )
    monkeypatch.setattr(lost_mod, "GRACE_S", 0.5)
    monkeypatch.setattr(lost_mod, "POLL_S", 0.01)
    lost, out = [], {}
    with lost_jobs_fail_alone(lost):
        for job_id in shown:
            monkeypatch.setattr(slurm.SlurmJob, "watcher", slurm.SlurmInfoWatcher())
            job = slurm.SlurmJob(folder=tmp_path, job_id=job_id)
            job.asked = False
            out[job_id] = core.Job.results(job)
    assert out["8"] == ["trained"]  # requeued: waited for
    assert all(isinstance(o, Lost) for o in lost) and out["9"] == lost[:1]
    assert [o.overrides for o in lost] == [["seed=9"], ["seed=10"]]
    assert "CANCELLED" in lost[0].why and "FAILED" in lost[1].why
    assert calls.count("9") == 2 and calls.count("10") > 3  # cancelled: at once; FAILED: a grace
