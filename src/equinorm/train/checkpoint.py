"""Atomic checkpoints of everything a run needs to continue bit-identically.

Model, optimizer, epoch and position within it, partial epoch sums, history so far, the mixup
generator and every global RNG (torch CPU and CUDA, numpy, python). The loaders need no state:
their draws are functions of (seed, epoch, batch). Written to a temporary file, flushed to disk,
then renamed over the old one, so a kill at any instant leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from equinorm.errors import EquinormError


class CheckpointError(EquinormError):
    pass


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 -- the legacy global RNG, for any code
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load(path: Path) -> dict:
    """Load a checkpoint; an unreadable one is reported by path and left in place."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); it was left as it is. "
            f"To start this run afresh, move it away (mv {path} {path}.bad) and run again"
        ) from exc
