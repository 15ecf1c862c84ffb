"""Where the Hydra configs live: inside the package in a wheel, ``conf/`` in a source checkout.

The YAML files start from the key types in Hydra's ConfigStore (:mod:`equinorm.train.schema`), so
whoever asks for the config directory to compose from gets them registered too, with the resolver
that names a run's variant (:mod:`equinorm.train.identity`).
"""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    from equinorm.train import identity, schema

    schema.register()
    identity.register()
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"equinorm's configs are in neither {packaged} nor {checkout}")
