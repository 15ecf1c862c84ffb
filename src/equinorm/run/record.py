"""One run's record on disk: the only code that reads and writes a run directory's files.

``<results_dir>/runs/<experiment>/<dataset>-<arch>-<norm>/[<variant>/]seed=<k>/`` (named by
:mod:`equinorm.experiment.identity`) holds ``config.yaml`` (the resolved config), ``history.csv``
(one row per epoch), ``summary.json`` (the run's identity -- name, dataset, arch, norm, seed and
variant, so that reports never parse directory names -- its status: running, complete or
diverged, the last epoch and the final metrics), ``error.json`` (why the last attempt failed),
``provenance.json`` (:mod:`equinorm.run.provenance`), ``checkpoint.pt``, ``model.pt`` and
``train.log``.

Safety: a process owns a run through an exclusive ``flock`` on ``.lock`` (released by the kernel if
the process dies), so a second process refuses; finished runs (complete or diverged) are never
written again; a run is only resumed or skipped under the same config.
"""

from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import json
import math
import os
import socket
from pathlib import Path

from omegaconf import OmegaConf

from equinorm import atomic
from equinorm.errors import ConfigError, EquinormError, one_line
from equinorm.experiment.checks import virtual_devices
from equinorm.experiment.identity import config_diff, semantic

FINISHED = ("complete", "diverged")
ERROR_FILE = "error.json"
METRICS = ("test_acc", "test_loss", "train_acc", "train_loss")
VAL_METRICS = ("val_acc", "val_loss")  # runs with a validation split (dataset.val_size) only
RECORDS = ("summary.json", ERROR_FILE, "config.yaml")  # a run directory holds one of them


class RunLockedError(EquinormError):
    pass


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def summarize(status: str, rows: list[dict], epochs: int, wall_time_s: float, **fields) -> dict:
    """A run's summary from its history rows: the one builder of ``summary.json``'s numbers."""
    last = rows[-1] if rows else {}
    finite = [r["test_acc"] for r in rows if math.isfinite(r.get("test_acc", math.nan))]
    return {
        "status": status,
        "epoch": int(last["epoch"]) if rows else 0,
        "epochs": epochs,
        **{k: last.get(k) for k in METRICS},
        **{k: last[k] for k in VAL_METRICS if k in last},
        "best_test_acc": max(finite, default=None),
        "wall_time_s": round(wall_time_s, 2),
        **fields,
    }


def setup(cfg, world_size: int, precision: str | None) -> dict:
    """The training setup that ``summary.json`` records beside the numbers (the report's captions
    read it, ``equinorm-evaluate`` shares the test set as the run's processes did): processes,
    devices each ran in turn, per-device and global batch, width and precision (fp32 or bf16;
    None where unknown)."""
    k = virtual_devices(cfg, world_size)
    return {
        "world_size": world_size,
        "virtual_devices": k,
        "batch_size": cfg.train.batch_size,
        "global_batch": cfg.train.batch_size * k * world_size,
        "width_mult": cfg.arch.width_mult,
        "precision": precision,
    }


def objective(summary: dict | None) -> float | None:
    """What a sweep's job returns for sweepers that optimise (Optuna, ...): the final validation
    accuracy of a run with a validation split, else its final test accuracy; None for a run that
    did not complete or has no finite value (a searching sweeper records a failed trial, where a
    NaN would end its study)."""
    if not summary or summary.get("status") != "complete":
        return None
    value = summary.get("val_acc", summary.get("test_acc"))
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    config_path = property(lambda self: self.path / "config.yaml")
    history_path = property(lambda self: self.path / "history.csv")
    summary_path = property(lambda self: self.path / "summary.json")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    model_path = property(lambda self: self.path / "model.pt")
    log_path = property(lambda self: self.path / "train.log")
    equilibrium_path = property(lambda self: self.path / "equilibrium.csv")
    error_path = property(lambda self: self.path / ERROR_FILE)

    # -- reading -----------------------------------------------------------------------------
    def summary(self) -> dict | None:
        try:
            return json.loads(self.summary_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"status": "unreadable"}

    def error(self) -> dict | None:
        """The last attempt's failure (``error.json``), None when there is none."""
        try:
            record = json.loads(self.error_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"error": f"unreadable {self.error_path}"}
        return record if isinstance(record, dict) else {"error": f"unreadable {self.error_path}"}

    def status(self) -> str | None:
        """complete / diverged / failed / in use / unfinished; None: nothing was ever written."""
        summary, error = self.summary(), self.error()
        if summary and summary.get("status") in FINISHED:
            return summary["status"]
        if error is not None:
            return "failed"
        if self.in_use():
            return "in use"
        return "unfinished" if summary is not None or self.history_path.exists() else None

    def stored_config(self) -> dict | None:
        if not self.config_path.is_file():
            return None
        return semantic(OmegaConf.load(self.config_path))

    def check_same_config(self, cfg) -> None:
        """Refuse (one line) a config that differs from the stored one. A key the stored config
        lacks -- one the suite gained after the run was made -- counts as the same where the job
        leaves it at its experiment's value (no variant item names it): a key is added with the
        default that computes what the code computed without it."""
        stored = self.stored_config()
        if stored is None:
            return
        named = set(cfg.get("variant") or ())
        diff = config_diff(stored, semantic(cfg), new_keys_unless=named)
        if diff:
            shown = "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")
            raise ConfigError(
                f"{self.path} holds a run with a different config ({shown}); give this run "
                "another name (name=...) or results_dir"
            )

    def finished_as(self, cfg) -> dict | None:
        """The summary of a finished run that the job ``cfg`` would only skip (same config),
        else None -- without taking the lock or touching a file."""
        summary = self.summary()
        if not summary or summary.get("status") not in FINISHED:
            return None
        try:
            self.check_same_config(cfg)
        except ConfigError:
            return None  # the job itself says what differs
        return summary

    def history(self) -> list[dict]:
        """history.csv as rows of floats ([] if absent or unreadable)."""
        try:
            with open(self.history_path, newline="") as f:
                return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        except (OSError, ValueError, TypeError):
            return []

    def rebuildable(self, epochs: int) -> list[dict] | None:
        """A finished run whose summary.json is missing or damaged: model.pt (written only at the
        end) and a history of all ``epochs`` epochs. Its history, else None."""
        if not self.model_path.is_file():
            return None
        rows = self.history()
        return rows if len(rows) == epochs and rows[-1].get("epoch") == epochs else None

    def rebuild_summary(self, rows: list[dict], **fields) -> dict:
        """Write summary.json of a complete run from its history (the damaged one is kept as
        summary.json.bad); returns it."""
        if self.summary_path.exists():
            os.replace(self.summary_path, self.summary_path.with_name("summary.json.bad"))
        elapsed = sum(r.get("epoch_time_s", 0.0) for r in rows)
        summary = summarize("complete", rows, int(rows[-1]["epoch"]), elapsed, **fields)
        self.write_summary(**summary, rebuilt=f"from history.csv and model.pt on {_now()}")
        return self.summary() or summary

    def quarantine(self) -> Path:
        """Move an unfinished run's files (history, summary, checkpoints, logs) into
        ``quarantine-<time>/`` inside the run directory, so that it starts afresh; returns it."""
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.path / f"quarantine-{stamp}"
        target.mkdir()
        keep = {".lock", "config.yaml", ERROR_FILE}
        for item in self.path.iterdir():
            if item.is_file() and item.name not in keep:
                os.replace(item, target / item.name)
        return target

    # -- ownership ---------------------------------------------------------------------------
    def lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise RunLockedError(
                    f"{self.path} is in use by another process (it holds {self.path / '.lock'}); "
                    "wait for it to finish or stop it"
                ) from None
            raise EquinormError(  # ENOSYS, EOPNOTSUPP, ENOLCK: e.g. Lustre mounted without flock
                f"cannot lock {self.path / '.lock'} ({exc.strerror}): runs are owned through "
                "flock, which this file system does not provide; put results_dir on one that "
                "does (Lustre: mount -o flock)"
            ) from None
        self._lock_fd = fd
        for partial in atomic.leftovers(self.path):  # a write of a killed owner (SIGKILL)
            partial.unlink(missing_ok=True)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def in_use(self) -> bool:
        """Whether another process holds the run's lock (without taking it)."""
        if self._lock_fd is not None:
            return False
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR)  # never creates one
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        except OSError:  # a file system without flock: nobody can hold it
            return False
        finally:
            os.close(fd)

    # -- writing (only by the owner) -------------------------------------------------------------
    def write_config(self, cfg) -> None:
        atomic.write_text(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))

    def write_history(self, rows: list[dict]) -> None:
        self.write_table(self.history_path, rows)

    def write_table(self, path: Path, rows: list[dict]) -> None:
        """Rewrite the CSV ``path`` from ``rows`` atomically."""
        if not rows:
            return
        with atomic.replacing(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def write_summary(self, **fields) -> None:
        previous = self.summary() or {}
        summary = {**previous, **fields, "updated": _now()}
        summary.setdefault("started", summary["updated"])
        atomic.write_text(self.summary_path, json.dumps(_plain(summary), indent=2) + "\n")

    def write_error(self, exc: BaseException, **identity) -> None:
        """``error.json``: time, host, the error's type and one line, and the run's identity; a
        directory that cannot be written is left as it is (the caller has logged the error)."""
        record = {
            "time": _now(),
            "host": socket.gethostname(),
            "type": type(exc).__name__,
            "error": one_line(exc),
            **identity,
        }
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.error_path, json.dumps(_plain(record), indent=2) + "\n")
        except OSError:
            pass


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (one that holds a run record), sorted; the files of an
    unfinished run set aside when it restarted (``quarantine-*``) are not one."""
    found = {p.parent for name in RECORDS for p in Path(root).rglob(name)}
    moved = ("quarantine-",)
    return sorted(
        p for p in found if not any(x.startswith(moved) for x in p.relative_to(root).parts)
    )


def _plain(obj):
    """JSON-ready: non-finite floats as null, str Enums as their value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, str) and hasattr(obj, "value"):
        return obj.value
    return obj


__all__ = [
    "ERROR_FILE",
    "FINISHED",
    "RunDir",
    "RunLockedError",
    "objective",
    "run_dirs",
    "setup",
    "summarize",
]
