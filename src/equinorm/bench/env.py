"""Describe the machine a benchmark ran on (recorded with every result row)."""

from __future__ import annotations

import ctypes
import datetime as _dt
import os

import torch

from equinorm.provenance import device_name


def steady_allocator() -> bool:
    """Keep freed memory in the process (glibc): large tensors are reused instead of being
    returned to the OS and page-faulted in again on every step, which on a VM makes CPU step
    times noisy by tens of percent. Affects every norm alike; returns whether it applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


def device_slug(device: torch.device) -> str:
    """A file-name-safe short name: e.g. ``cpu-2cores`` or ``nvidia-h100-80gb-hbm3``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{os.cpu_count()}cores"
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def environment(device: torch.device) -> dict:
    return {
        "date": _dt.date.today().isoformat(),
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
