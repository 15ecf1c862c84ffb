"""wandb logging of every run: group = experiment/dataset-arch-norm, name = seed=<k>.

Offline by default (files under ``<wandb.dir>/wandb``; ``wandb sync`` uploads them later),
``wandb.mode=online`` uploads live, ``disabled`` turns it off (tests). The wandb run id is derived
from the run directory, so a resumed run continues the same wandb run; each run is finished, so the
jobs of a multirun never share one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

from equinorm.errors import ConfigError

MODES = ("offline", "online", "disabled")
log = logging.getLogger(__name__)


class WandbLogger:
    def __init__(
        self,
        wandb_cfg: Mapping,
        *,
        run_path: str,
        group: str,
        name: str,
        config: dict,
        enabled: bool = True,
    ) -> None:
        mode = wandb_cfg["mode"]
        if mode not in MODES:
            raise ConfigError(f"wandb.mode={mode!r} is not one of {', '.join(MODES)}")
        self.run = None
        if mode == "disabled" or not enabled:
            return
        import wandb

        run_id = hashlib.sha1(run_path.encode()).hexdigest()[:16]
        try:
            self.run = wandb.init(
                project=wandb_cfg["project"],
                entity=wandb_cfg.get("entity"),
                group=group,
                name=name,
                id=run_id,
                resume="allow",
                mode=mode,
                dir=str(wandb_cfg["dir"]),
                config=config,
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as exc:  # logging must never cost a training run
            log.warning("wandb.init failed (%s); continuing without wandb", exc)

    def log(self, metrics: Mapping, step: int) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def summary(self, **fields) -> None:
        if self.run is not None:
            self.run.summary.update(fields)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
