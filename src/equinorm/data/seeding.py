"""Reproducible randomness streams derived from (run seed, epoch, purpose, ...).

Every random draw of the input pipeline comes from a generator seeded by :func:`derive_seed`, so a
run resumed at an epoch boundary (or mid-epoch) sees exactly the draws of an uninterrupted run.
"""

from __future__ import annotations

import torch

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (order matters)."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK))
    return h >> 1


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts``."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(*parts))


# purposes, so that streams of the same (seed, epoch) never coincide
PERMUTATION, AUGMENT, SAMPLE, MIXUP, INIT, VALIDATION = range(6)
