"""Atomic checkpoints of everything a run needs to continue bit-identically.

Model, optimizer, epoch and position within it, partial epoch sums, history so far, the mixup
generator and every global RNG (torch CPU and CUDA, numpy, python). The loaders need no state:
their draws are functions of (seed, epoch, batch). Written to a temporary file, flushed to disk,
then renamed over the old one, so a kill at any instant leaves the previous checkpoint intact;
the one before is kept as ``checkpoint.prev.pt`` (:func:`save_atomic` with ``keep_previous``), and
:func:`load_latest` falls back to it when the newest cannot be read (a disk error, a truncated
copy), moving the unreadable file aside as ``<name>.bad`` and saying so.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from equinorm import atomic
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
        # the GPUs visible now: one resumed under CUDA_VISIBLE_DEVICES=<one of them> has no
        # generators for the others it was saved with
        for i, cuda in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda, i)


def previous(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_atomic(obj, path: Path, keep_previous: bool = False) -> None:
    """Write ``obj`` to ``path`` atomically and durably; ``keep_previous`` first renames the old
    ``path`` to :func:`previous` (a kill between the renames leaves that one: :func:`load_latest`
    reads it)."""
    path = Path(path)
    with atomic.replacing(
        path, "wb", durable=True, previous=previous(path) if keep_previous else None
    ) as f:
        torch.save(obj, f)


def exists(path: Path) -> bool:
    """A checkpoint to resume from: ``path`` or the one before it."""
    return Path(path).exists() or previous(path).exists()


def load_latest(path: Path, notes: list[str]) -> tuple[dict | None, Path | None]:
    """(state, file) of the newest readable checkpoint: ``path``, else :func:`previous`; each
    unreadable one is renamed to ``<name>.bad`` (kept; said in ``notes``). (None, None) if none."""
    for candidate in (Path(path), previous(path)):
        if not candidate.exists():
            continue
        try:
            return load(candidate), candidate
        except CheckpointError as exc:
            bad = candidate.with_name(candidate.name + ".bad")
            os.replace(candidate, bad)
            notes.append(f"{exc}; moved it to {bad}")
    return None, None


def load(path: Path) -> dict:
    """Load a checkpoint; an unreadable one raises :class:`CheckpointError` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {detail})"
        ) from exc
