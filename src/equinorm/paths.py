"""Where the Hydra configs live: inside the package in a wheel, ``conf/`` in a source checkout."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"equinorm's configs are in neither {packaged} nor {checkout}")
