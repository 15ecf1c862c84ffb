"""How many CPU threads torch may use: the CPUs this process may run on, shared with the other
processes of its node.

torch's default is every core of the machine; a SLURM job given fewer (``--cpus-per-task``), a
process pinned by ``taskset``, or torchrun's processes sharing one node then run more OpenMP
threads than cores, and a step does not just slow down, it collapses (spinning threads wait on
each other). A process's share is its affinity mask, capped by ``SLURM_CPUS_PER_TASK``, divided
among torchrun's local processes (``LOCAL_WORLD_SIZE``; a SLURM task's CPUs are its own already,
so several tasks per job are not divided again); ``OMP_NUM_THREADS``, when set, and
``train.threads`` override it (the trainer warns where they exceed it). torchrun sets
``OMP_NUM_THREADS=1`` in each of several processes where it is unset, so ``make reproduce-*
NPROC=n`` sets it to the share first (:func:`equinorm.launch.reproduce.torchrun_env`); by hand,
give it yourself. submitit's local launcher starts a batch of jobs at once on one machine: each
job has the CPUs that equinorm's sweeper gave it (``EQUINORM_JOB_CPUS``,
:func:`equinorm.launch.sweeper.local_batch`).
"""

from __future__ import annotations

import os

JOB_CPUS = "EQUINORM_JOB_CPUS"  # a submitit local job's CPUs, set by the sweeper that starts it


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ[name])
    except (KeyError, ValueError):
        return None
    return value if value > 0 else None


def cpus_here() -> int:
    """The CPUs this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_budget() -> int:
    """Threads for this process (>= 1): ``OMP_NUM_THREADS`` where set, else its share."""
    return _env_int("OMP_NUM_THREADS") or cpu_share()


def cpu_share() -> int:
    """The CPUs this process may keep busy (>= 1); see the module docstring."""
    cpus = cpus_here()
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        cpus = min(cpus, _env_int(JOB_CPUS) or cpus)
    slurm = _env_int("SLURM_CPUS_PER_TASK")
    if slurm is not None:
        cpus = min(cpus, slurm)
    # torchrun's processes share what the node or SLURM task has; SLURM's own tasks (submitit
    # exports LOCAL_WORLD_SIZE for them too) each have their SLURM_CPUS_PER_TASK already
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    sharing = _env_int("LOCAL_WORLD_SIZE") if torchrun or slurm is None else None
    return max(1, cpus // (sharing or 1))
