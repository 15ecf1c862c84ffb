"""An epoch's permutation split across data-parallel devices, real (DDP ranks) or virtual.

The paper's SVHN runs used 2 GPUs with 128 images each: one step sees 256 images, and every
normalization statistic comes from one device's 128. ``k`` virtual devices in one process do
the same arithmetic: device ``rank * k + j`` of ``world_size * k`` takes every
``(world_size * k)``-th example of the permutation (``DistributedSampler``'s split, each device
the same count), and this process's order interleaves its ``k`` shards so that every ``k * B``
consecutive indices are the ``k`` devices' micro-batches of ``B``, one after the other. With
``k = 1`` it is the plain DDP shard.
"""

from __future__ import annotations

import torch
from torch import Tensor


def train_shard(
    perm: Tensor, rank: int, world_size: int, virtual_devices: int = 1, micro_batch: int = 1
) -> Tensor:
    """This process's indices from ``perm``, in the order its batches take them (see module)."""
    k = virtual_devices
    devices = world_size * k
    per_device = len(perm) // devices
    shards = [perm[rank * k + j :: devices][:per_device] for j in range(k)]
    if k == 1:
        return shards[0]
    full = per_device // micro_batch * micro_batch
    head = [s[:full].view(-1, micro_batch) for s in shards]  # (batches, B) per device
    tail = [s[full:] for s in shards]  # the last, partial micro-batch of each device
    return torch.cat([torch.stack(head, dim=1).reshape(-1), *tail])


def split_micro_batches(t: Tensor, virtual_devices: int) -> tuple[Tensor, ...]:
    """The ``virtual_devices`` equal micro-batches a batch of :func:`train_shard` is made of."""
    if len(t) % virtual_devices:
        raise ValueError(f"a batch of {len(t)} does not split into {virtual_devices} devices")
    return t.split(len(t) // virtual_devices)
