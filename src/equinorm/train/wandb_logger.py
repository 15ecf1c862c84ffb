"""wandb logging of every run: group = experiment/dataset-arch-norm, name = seed=<k>.

Offline by default (files under ``<wandb.dir>/wandb``; ``wandb sync`` uploads them later),
``wandb.mode=online`` uploads live, ``disabled`` turns it off (tests). The wandb run id is derived
from the run directory, so a resumed run continues the same wandb run; each run is finished, so the
jobs of a multirun never share one.

Offline, wandb cannot resume a run: every start writes a new ``offline-run-<time>-<id>`` directory,
and syncing several directories of one id uploads one over the other (wandb/wandb#3841). So a
resumed offline run replays its history so far into the new directory (:meth:`replay`) and the
earlier directories of its id move to ``<wandb.dir>/wandb/superseded/``: exactly one directory per
run holds all its epochs, and ``wandb sync --yes`` (run in ``<wandb.dir>``) uploads each run
once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

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
        self.offline = mode == "offline"

    def replay(self, rows: Iterable[tuple[int, Mapping]]) -> None:
        """A resumed offline run: log the epochs trained so far (``(step, metrics)``) into this
        start's directory and move the earlier directories of the run's id aside."""
        if self.run is None or not self.offline:
            return
        try:
            for step, metrics in rows:
                self.run.log(dict(metrics), step=step)
            self._supersede()
        except Exception as exc:
            log.warning("wandb: could not replay the run's history (%s)", exc)

    def _supersede(self) -> None:
        here = Path(self.run.dir).parent  # .../wandb/offline-run-<time>-<id>
        aside = here.parent / "superseded"
        for old in sorted(here.parent.glob(f"offline-run-*-{self.run.id}")):
            if old != here:
                aside.mkdir(exist_ok=True)
                os.replace(old, aside / old.name)

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
