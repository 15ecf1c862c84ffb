"""DDP via torchrun: process-group set-up, rank helpers and metric reduction.

``torchrun --nproc_per_node=N -m equinorm.train ...`` starts N processes; each sees
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``. Through the submitit launcher with several tasks per
job (``hydra.launcher.tasks_per_node=2 hydra.launcher.gpus_per_node=2``, on SLURM or local) the
same variables are derived from the job's environment. BatchNorm and EquiNorm statistics stay per
device (the paper's SVHN runs: 2 GPUs x 128); the backend is NCCL on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from submitit import JobEnvironment
from submitit.helpers import TorchDistributedEnvironment


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _export_submitit_env() -> None:
    """Multi-task submitit jobs: set RANK, WORLD_SIZE, MASTER_ADDR, ... for env://."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_distributed(device: torch.device) -> DistInfo:
    _export_submitit_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown() -> None:
    """Destroy the process group while the interpreter is fully alive, after collecting the
    run's objects (DDP's reducer holds the group through reference cycles): a gloo group left to
    interpreter finalization can abort the process after a finished run ("terminate called
    without an active exception"; pytorch/pytorch#179291)."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(obj, device: torch.device):
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (running statistics) on every rank, as DDP's forward does."""
    if not dist.is_initialized():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
