"""Does the SLURM request fit the partition it goes to? Checked before anything is submitted.

A request no node can meet leaves the array PENDING forever (``PartitionConfig``) with no word from
the launcher; ``gpus_per_node=1`` on a CPU-only cluster fails with "Invalid generic resource (gres)
specification"; ``gpus_per_node=2`` on nodes of one GPU each (``make reproduce-svhn NPROC=2``)
pends forever too; a ``timeout_min`` at or below ``signal_delay_s`` (SLURM may signal up to 60 s
early) requeues the job before it trains, up to ``max_num_timeout`` times. So the command
line's check (:mod:`equinorm.experiment.command`) reads the partition with ``sinfo`` and says,
in one line, which ``hydra.launcher.*`` key to change. Without ``sinfo`` on the submitting
machine there is no SLURM to submit to: one line says so (submitit would fail in sbatch).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass

from omegaconf import DictConfig

from equinorm.errors import ConfigError

EARLY_S = 60  # SLURM may send the --signal up to this much earlier than asked


@dataclass(frozen=True)
class Partition:
    name: str
    cpus: int  # CPUs of its largest node
    memory_mb: int  # memory of its largest node
    gpus: int | None  # GPUs of its node with the most (0: no GPU gres; None: a count not shown)
    limit_min: int | None  # time limit; None: infinite
    default: bool


def _minutes(limit: str) -> int | None:
    """sinfo's ``%l``: ``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        h, m, s = (parts[0], 0, 0) if days else (0, parts[0], 0)
    elif len(parts) == 2:
        h, m, s = (parts[0], parts[1], 0) if days else (0, parts[0], parts[1])
    else:
        h, m, s = parts
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def _gpus(gres: str) -> int | None:
    """The GPUs of sinfo's ``%G`` (``(null)``, ``gpu:4``, ``gpu:a100:4(S:0-1)``, several types
    comma-separated): their sum; None for a GPU gres without a count."""
    counts = re.findall(r"\bgpu(?::[\w.-]+)?:(\d+)", gres)
    if not counts and re.search(r"\bgpu\b", gres):
        return None
    return sum(int(n) for n in counts)


@functools.cache
def partitions() -> tuple[Partition, ...] | None:
    """Every partition as sinfo reports it; None where there is no sinfo."""
    if shutil.which("sinfo") is None:
        return None
    cmd = ["sinfo", "-h", "-o", "%P|%c|%m|%G|%l"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode:  # its last line says why (a "fatal:" after the errors that led there)
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise ConfigError(f"the SLURM launcher: sinfo cannot reach the cluster ({why})")
    found: dict[str, Partition] = {}
    for line in proc.stdout.splitlines():
        name, cpus, mem, gres, limit = line.strip().split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        old = found.get(name)
        cpus_n = int(cpus.rstrip("+"))
        mem_n = int(mem.rstrip("+"))
        gpus = _gpus(gres)
        if old:
            cpus_n, mem_n, gpus = (
                max(cpus_n, old.cpus),
                max(mem_n, old.memory_mb),
                None if None in (gpus, old.gpus) else max(gpus, old.gpus),
            )
        found[name] = Partition(name, cpus_n, mem_n, gpus, _minutes(limit), default)
    return tuple(found.values())


def check_time(launcher: DictConfig) -> None:
    timeout_s, delay = 60 * int(launcher.timeout_min), int(launcher.signal_delay_s)
    if timeout_s <= delay + EARLY_S:
        least = (delay + EARLY_S) // 60 + 2
        raise ConfigError(
            f"hydra.launcher.timeout_min={launcher.timeout_min} leaves no time to train: SLURM "
            f"signals signal_delay_s={delay} s (and up to {EARLY_S} s more) before the limit; "
            f"set hydra.launcher.timeout_min>={least} or lower hydra.launcher.signal_delay_s"
        )


def check_launcher(launcher: DictConfig) -> None:
    """One line (ConfigError) naming the ``hydra.launcher`` key that does not fit."""
    check_time(launcher)
    known = partitions()
    if known is None:
        raise ConfigError(
            "the SLURM launcher needs SLURM and this machine has none (no sinfo on PATH): "
            "submit from the cluster's login node, or leave hydra/launcher out to run here"
        )
    wanted = launcher.get("partition")
    if wanted:
        match = [p for p in known if p.name == wanted]
        if not match:
            names = ", ".join(p.name for p in known)
            raise ConfigError(f"hydra.launcher.partition={wanted} is not one of {names}")
    else:
        match = [p for p in known if p.default] or list(known[:1])
        if not match:
            raise ConfigError("the SLURM launcher: sinfo lists no partition")
    p = match[0]
    where = f"partition {p.name}"
    gpus = int(launcher.get("gpus_per_node") or 0)
    if gpus > 0 and p.gpus == 0:
        raise ConfigError(
            f"{where} has no GPUs but hydra.launcher.gpus_per_node={gpus}: use "
            "hydra/launcher=submitit_slurm_cpu (or hydra.launcher.gpus_per_node=0)"
        )
    if p.gpus is not None and gpus > p.gpus:
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus} exceeds the {p.gpus} GPU(s) of {where}'s "
            f"nodes: set hydra.launcher.gpus_per_node<={p.gpus} (make reproduce-*: NPROC<="
            f"{p.gpus}; a run's global batch stays train.devices x train.batch_size)"
        )
    tasks = int(launcher.get("tasks_per_node") or 1)
    cpus = int(launcher.get("cpus_per_task") or 1) * tasks
    if tasks > p.cpus:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks} exceeds the {p.cpus} CPUs of {where}'s "
            f"nodes: set hydra.launcher.tasks_per_node<={p.cpus}"
        )
    if cpus > p.cpus:
        raise ConfigError(
            f"hydra.launcher.cpus_per_task={launcher.cpus_per_task} x tasks_per_node={tasks} "
            f"exceeds the {p.cpus} CPUs of {where}'s nodes: set hydra.launcher.cpus_per_task"
            f"<={max(p.cpus // tasks, 1)}"
        )
    mem_gb = launcher.get("mem_gb")
    if mem_gb and mem_gb * 1024 > p.memory_mb:
        raise ConfigError(
            f"hydra.launcher.mem_gb={mem_gb} exceeds the {p.memory_mb // 1024} GB of {where}'s "
            f"nodes: set hydra.launcher.mem_gb<={p.memory_mb // 1024}"
        )
    if p.limit_min is not None and int(launcher.timeout_min) > p.limit_min:
        raise ConfigError(
            f"hydra.launcher.timeout_min={launcher.timeout_min} exceeds {where}'s time limit "
            f"({p.limit_min} min): set hydra.launcher.timeout_min<={p.limit_min}"
        )


__all__ = ["Partition", "check_launcher", "check_time", "partitions"]
