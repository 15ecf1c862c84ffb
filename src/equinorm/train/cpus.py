"""How many CPU threads torch may use: the CPUs this process may run on, shared with the other
processes of its node.

torch's default is every core of the machine; a SLURM job given fewer (``--cpus-per-task``), a
process pinned by ``taskset``, or torchrun's processes sharing one node then run more OpenMP
threads than cores, and a step does not just slow down, it collapses (spinning threads wait on
each other). The budget is the process's affinity mask, capped by ``SLURM_CPUS_PER_TASK``, divided
among torchrun's local processes (``LOCAL_WORLD_SIZE``; a SLURM task's CPUs are its own already,
so several tasks per job are not divided again); ``OMP_NUM_THREADS``, when set, and
``train.threads`` override it.
"""

from __future__ import annotations

import os


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ[name])
    except (KeyError, ValueError):
        return None
    return value if value > 0 else None


def cpu_budget() -> int:
    """Threads for this process (>= 1); see the module docstring."""
    explicit = _env_int("OMP_NUM_THREADS")
    if explicit is not None:
        return explicit
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    slurm = _env_int("SLURM_CPUS_PER_TASK")
    if slurm is not None:
        cpus = min(cpus, slurm)
    # torchrun's processes share what the node or SLURM task has; SLURM's own tasks (submitit
    # exports LOCAL_WORLD_SIZE for them too) each have their SLURM_CPUS_PER_TASK already
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    sharing = _env_int("LOCAL_WORLD_SIZE") if torchrun or slurm is None else None
    return max(1, cpus // (sharing or 1))
