"""Describe the machine a benchmark ran on (recorded with every result row)."""

from __future__ import annotations

import ctypes
import datetime as _dt
import os
import platform
import subprocess

import torch

from equinorm.run.provenance import device_name


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


def describe(device: torch.device) -> dict:
    """What a GPU check reports first: the accelerator, its driver and the library versions."""
    info = environment(device) | {
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpus": os.cpu_count(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "driver": _driver_version(),
        }
    return info


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None


if __name__ == "__main__":  # python -m equinorm.bench.env [OUT.json] [--device D]: one line + JSON
    import json
    import sys

    args = sys.argv[1:]
    dev = args[args.index("--device") + 1] if "--device" in args else None
    dev = torch.device(dev or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = describe(dev)
    line = ", ".join(
        f"{k} {info[k]}"
        for k in ("device", "driver", "torch", "cuda", "cudnn", "python")
        if info.get(k)
    )
    print(line)
    if args and not args[0].startswith("--"):
        with open(args[0], "w") as f:
            json.dump(info, f, indent=2)
