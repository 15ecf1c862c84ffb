"""torch's thread budget follows the CPUs a process may use (equinorm.train.cpus)."""

from __future__ import annotations

import os

import pytest
import torch

from equinorm.train.cpus import cpu_budget

CASES = [  # (affinity CPUs, environment, threads)
    (8, {}, 8),
    (8, {"SLURM_CPUS_PER_TASK": "2"}, 2),  # a SLURM task given fewer CPUs than the node has
    (8, {"LOCAL_WORLD_SIZE": "2"}, 4),  # torchrun --nproc_per_node=2 shares the node
    # torchrun inside a SLURM task: its processes share the task's CPUs
    (8, {"SLURM_CPUS_PER_TASK": "6", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}, 3),
    # 2 SLURM tasks per job (submitit exports LOCAL_WORLD_SIZE): each has its own 4 CPUs
    (8, {"SLURM_CPUS_PER_TASK": "4", "LOCAL_WORLD_SIZE": "2"}, 4),
    (2, {"SLURM_CPUS_PER_TASK": "8"}, 2),  # pinned to 2 CPUs (taskset, cgroup cpuset)
    (1, {"LOCAL_WORLD_SIZE": "4"}, 1),  # never 0
    (8, {"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "2"}, 3),  # the user said so
    (8, {"SLURM_CPUS_PER_TASK": "junk"}, 8),
    # a job of submitit's local launcher: its share of the machine (launch.sweeper.local_batch)
    (8, {"SUBMITIT_EXECUTOR": "local", "EQUINORM_JOB_CPUS": "2"}, 2),
    (8, {"SUBMITIT_EXECUTOR": "local", "EQUINORM_JOB_CPUS": "4", "LOCAL_WORLD_SIZE": "2"}, 2),
    (8, {"EQUINORM_JOB_CPUS": "2"}, 8),  # left in the environment of a process not so started
]


@pytest.mark.parametrize(("cpus", "env", "threads"), CASES)
def test_threads_follow_the_cpus_this_process_may_use(cpus, env, threads, monkeypatch):
    for name in (
        "SLURM_CPUS_PER_TASK",
        "LOCAL_WORLD_SIZE",
        "OMP_NUM_THREADS",
        "TORCHELASTIC_RUN_ID",
        "SUBMITIT_EXECUTOR",
        "EQUINORM_JOB_CPUS",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert cpu_budget() == threads


@pytest.mark.parametrize(
    ("args", "omp", "said"),
    [
        (["train.threads=2"], "1", "train.threads=2 is more than"),
        # an OMP_NUM_THREADS=8 left in a shell (or passed on by sbatch) trained 8x slower on 2
        # cores, and only train.threads was compared with the CPUs
        ([], "2", "OMP_NUM_THREADS=2 (environment) is more than"),
    ],
)
def test_more_threads_than_cpus_is_warned_about(args, omp, said, tmp_path, monkeypatch, caplog):
    """train.threads=100 on 2 CPUs ran 30x slower (OpenMP threads collapse) without a word."""
    from equinorm.train import run as run_module
    from tests.conftest import SHORT, compose_cfg

    for name in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    threads = torch.get_num_threads()
    try:
        run_module.run(compose_cfg(*SHORT, "debug=smoke", *args, results=tmp_path))
    finally:
        torch.set_num_threads(threads)
    said += " the 1 CPU(s) this process may use"
    assert said in caplog.text and "(train.threads=1 fits them)" in caplog.text
    (log,) = (tmp_path / "runs").rglob("train.log")
    assert said in log.read_text()  # where it is read after the run, too
