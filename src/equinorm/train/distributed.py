"""DDP via torchrun: process-group set-up, rank helpers and metric reduction.

``torchrun --nproc_per_node=N -m equinorm.train ...`` starts N processes; each sees
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``. Through the submitit launcher with several tasks per
job (``hydra.launcher.tasks_per_node=2 hydra.launcher.gpus_per_node=2``, on SLURM or local) the
same variables are derived from the job's environment. BatchNorm and EquiNorm statistics stay per
device (the paper's SVHN runs: 2 GPUs x 128); the backend is NCCL on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
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


_held = False  # this process set up a process group: it ends through leave()


def init_distributed(device: torch.device) -> DistInfo:
    global _held
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
        _held = True
    return info


def shutdown() -> None:
    """Destroy the process group while the interpreter is fully alive, after collecting the
    run's objects: a gloo group left to interpreter finalization can abort the process after a
    finished run ("terminate called without an active exception"; pytorch/pytorch#179291). A DDP
    model's C++ reducer keeps the group's threads running even so: :func:`leave` ends such a
    process."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def leave(code: object) -> None:
    """End a process that held a process group as the interpreter ends one -- its other threads
    joined, the atexit callbacks run (logging's, wandb's), the output flushed, ``sys.exit(code)``'s
    status -- but without its teardown. DDP's C++ reducer outlives the model and keeps the group
    alive past :func:`shutdown` (torch 2.15), so its gloo threads still run while the interpreter
    and the C++ runtime tear down, and 2 exits in 80 of a complete 2-process run aborted there
    ("terminate called without an active exception": torchrun called the run failed). Returns at
    once in a process that held no group."""
    if not _held:
        return
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):  # sys.exit("message"): said, status 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


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
