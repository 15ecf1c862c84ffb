"""wandb logging of every run: group = experiment/dataset-arch-norm[/variant], name = seed=<k>.

Offline by default (files under ``<wandb.dir>/wandb``; ``wandb sync`` uploads them later),
``wandb.mode=online`` uploads live (where it cannot -- no network or login on a compute node --
it logs offline; a server it cannot connect to is known in seconds, not after wandb's 90 s
init timeout), ``disabled`` turns it off (tests). Offline opens no connection: wandb 0.31 sends its
own usage metrics to its server unless the process-wide mode (``wandb.setup``) is offline, and
a server that accepts but never answers held every run's exit for 10 s. The wandb run id is derived
from the run directory, so a resumed run continues the same wandb run; each run is finished, so the
jobs of a multirun never share one. wandb failing -- on shutdown when a scheduler's SIGTERM reached
its service process too, on a lost network -- is a warning: the run, its checkpoint and the signal
handed on to the scheduler never depend on it. After a failure, and once more when the process
ends (:func:`release`, from the Hydra app), wandb's service connection is torn down here, quietly:
otherwise wandb's own atexit hook tears it down after the trainer's last line and, with the
service gone, prints a traceback there (wandb 0.31: ``ConnectionResetError: Connection lost``).

Offline, wandb cannot resume a run: every start writes a new ``offline-run-<time>-<id>`` directory,
and syncing several directories of one id uploads one over the other (wandb/wandb#3841). So a
resumed offline run replays its history so far into the new directory (:meth:`replay`) and the
earlier directories of its id move to ``<wandb.dir>/wandb/superseded/``: exactly one directory per
run holds all its epochs, and ``wandb sync --yes`` (run in ``<wandb.dir>``) uploads each run
once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies

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
        mode = str(
            getattr(wandb_cfg["mode"], "value", wandb_cfg["mode"])
        )  # offline|online|disabled
        self.run = None
        self.offline = mode == "offline"
        if mode == "disabled" or not enabled:
            return
        import wandb

        run_id = hashlib.sha1(run_path.encode()).hexdigest()[:16]
        init = dict(project=wandb_cfg["project"], entity=wandb_cfg.get("entity"), group=group)
        init |= dict(name=name, id=run_id, resume="allow", dir=str(wandb_cfg["dir"]), config=config)
        # online without a network or a login (a compute node): offline keeps the curves
        attempts = [mode, "offline"] if mode == "online" else [mode]
        failure = _unreachable(wandb) if mode == "online" else None
        if failure:  # wandb.init would retry for its init_timeout (90 s) in every job
            attempts = ["offline"]
        for attempt in attempts:
            settings = wandb.Settings(console="off", silent=True, mode=attempt)
            try:
                # the process's mode too: wandb's own telemetry is off only when that is offline
                wandb.setup(settings=settings)
                self.run = wandb.init(**init, mode=attempt, settings=settings)
            except Exception as exc:  # logging must never cost a training run
                failure = _one_line(exc)
                release()
                continue
            self.offline = attempt == "offline"
            if attempt != mode:
                where = Path(init["dir"]) / "wandb"
                log.warning(
                    "wandb cannot log online (%s); logging offline under %s (wandb sync "
                    "uploads it later)",
                    failure,
                    where,
                )
            return
        log.warning("wandb.init failed (%s); continuing without wandb", failure)

    def replay(self, rows: Iterable[tuple[int, Mapping]]) -> None:
        """A resumed offline run: log the epochs trained so far (``(step, metrics)``) into this
        start's directory and move the earlier directories of the run's id aside."""
        if not self.offline:
            return

        def replay() -> None:
            for step, metrics in rows:
                self.run.log(dict(metrics), step=step)
            self._supersede()

        self._guarded("replay of the run's history", replay)

    def _supersede(self) -> None:
        here = Path(self.run.dir).parent  # .../wandb/offline-run-<time>-<id>
        aside = here.parent / "superseded"
        for old in sorted(here.parent.glob(f"offline-run-*-{self.run.id}")):
            if old != here:
                aside.mkdir(exist_ok=True)
                os.replace(old, aside / old.name)

    def _guarded(self, what: str, call) -> None:
        """Run a wandb call; a failure (its service killed by the same signal as us, a lost
        network, a full disk) is a warning and ends wandb for this run, never the run itself."""
        if self.run is None:
            return
        try:
            call()
        except Exception as exc:
            log.warning(
                "wandb %s failed (%s: %s); continuing without wandb",
                what,
                type(exc).__name__,
                _one_line(exc),
            )
            self.run = None
            release()

    def log(self, metrics: Mapping, step: int) -> None:
        self._guarded("log", lambda: self.run.log(dict(metrics), step=step))

    def summary(self, **fields) -> None:
        self._guarded("summary", lambda: self.run.summary.update(fields))

    def finish(self, exit_code: int = 0) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning(
                "wandb finish failed (%s: %s); its files may be incomplete",
                type(exc).__name__,
                _one_line(exc),
            )
            release(exit_code)  # its service is gone: drop the connection now


PROBE_TIMEOUT_S = 3.0  # how long a TCP connection to wandb's server may take to open


def _unreachable(wandb) -> str | None:
    """Why this machine cannot open a connection to wandb's server (its ``base_url``: a name
    without DNS, a refused or silent port), or None. Behind a proxy wandb's own client decides
    (None)."""
    try:
        settings = wandb.setup().settings  # the environment's and the settings files' values
    except Exception:  # wandb.init will say what is wrong
        return None
    proxies = {k for k in getproxies() if k != "no"}  # the environment's, as urllib reads them
    if settings.https_proxy or settings.http_proxy or proxies:
        return None
    url = urlsplit(settings.base_url)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    try:
        socket.create_connection(address, timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"cannot connect to {address[0]}:{address[1]}: {exc.strerror or _one_line(exc)}"
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


RELEASE_WAIT_S = 10.0  # how long the trainer waits for wandb's service to shut down


def release(exit_code: int | None = None) -> None:
    """Tear down this process's wandb service connection, if wandb was used, without a word: a
    failure here (the service killed by the same signal as us) has been or need not be reported.
    Nothing is left for wandb's atexit hook, so nothing prints after the trainer's last line. A
    service that does not shut down (wandb 0.19 after a failed online init: it keeps retrying)
    is left behind after RELEASE_WAIT_S; it ends with this process."""
    wandb = sys.modules.get("wandb")
    teardown = getattr(wandb, "teardown", None)
    if teardown is None:
        return

    def quietly() -> None:
        with contextlib.suppress(Exception):
            teardown(exit_code=exit_code)

    worker = threading.Thread(target=quietly, name="wandb-release", daemon=True)
    worker.start()
    worker.join(RELEASE_WAIT_S)
