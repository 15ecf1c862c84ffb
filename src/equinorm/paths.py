"""Where the Hydra configs live: inside the package in a wheel, ``conf/`` in a source checkout.

The YAML files start from the key types in Hydra's ConfigStore (:mod:`equinorm.train.schema`), so
whoever asks for the config directory to compose from gets them registered too, with the resolver
that names a run's variant (:mod:`equinorm.train.identity`).
"""

from __future__ import annotations

import warnings
from pathlib import Path


def config_dir() -> Path:
    from equinorm.train import identity, schema

    schema.register()
    identity.register()
    # conf/hydra/launcher/submitit_slurm.yaml gives the plugin's `submitit_slurm` our defaults (one
    # GPU per job, requeue). Hydra 1.3 merges it onto the plugin's schema and warns that this
    # same-name matching is deprecated; the file is complete (it carries _target_ and every
    # field), so it keeps working on its own where the matching is gone. Only that one warning
    # is silenced, for whoever composes from these configs (the trainer, the reproduce script).
    warnings.filterwarnings("ignore", message=r"(?s).*hydra/launcher/submitit_slurm.*schema")
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"equinorm's configs are in neither {packaged} nor {checkout}")
