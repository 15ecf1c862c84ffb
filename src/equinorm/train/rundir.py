"""One run's directory: its lock, resolved config, history.csv and summary.json.

``<results_dir>/runs/<experiment>/<dataset>-<arch>-<norm>/[<variant>/]seed=<k>/`` (the variant:
:mod:`equinorm.train.identity`) holds ``config.yaml`` (the resolved config), ``history.csv`` (one
row per epoch), ``summary.json`` (status: running, complete or diverged; the last epoch; the final
test metrics), ``provenance.json`` (:mod:`equinorm.provenance`), ``checkpoint.pt`` and
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
from pathlib import Path

from omegaconf import OmegaConf

from equinorm.errors import ConfigError, EquinormError

#: config keys that do not change a run's results (where things live, how they are shown)
NON_SEMANTIC = (
    "results_dir",
    "run_dir",
    "dataset.root",
    "dataset.download",
    "dataset.verify",
    "dataset.workers",
    "norm.impl",  # EquiNorm's fused or reference implementation: the same function
    "train.device",
    "train.threads",
    "train.progress",
    "train.checkpoint",
    "train.resume",
    "train.compile",
    "train.equilibrium_stats",
    "train.fail_on_divergence",
    "wandb",
    "hydra",
)
FINISHED = ("complete", "diverged")
ERROR_FILE = "error.json"  # why the last attempt failed (written by a sweep's job, train/sweep.py)


class RunLockedError(EquinormError):
    pass


def semantic_config(cfg) -> dict:
    """The config as a plain dict without the keys listed in NON_SEMANTIC."""
    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for key in NON_SEMANTIC:
        node, *rest = key.split(".")
        if rest and isinstance(data.get(node), dict):
            data[node].pop(rest[0], None)
        elif not rest:
            data.pop(node, None)
    return data


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va} -> {vb}")
    return out


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


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

    def stored_config(self) -> dict | None:
        if not self.config_path.is_file():
            return None
        return semantic_config(OmegaConf.load(self.config_path))

    def stored_epochs(self) -> int | None:
        stored = self.stored_config()
        return None if stored is None else stored.get("epochs")

    def check_same_config(self, cfg, *, but_epochs: bool = False) -> None:
        """Refuse (one line) a config that differs from the stored one; ``but_epochs``: the
        number of epochs may differ (a longer schedule, :func:`equinorm.train.run.decide`)."""
        stored = self.stored_config()
        if stored is None:
            return
        diff = config_diff(stored, semantic_config(cfg))
        if but_epochs:
            diff = [line for line in diff if not line.startswith("epochs:")]
        if diff:
            shown = "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")
            raise ConfigError(
                f"{self.path} holds a run with a different config ({shown}); give this run "
                "another name (name=...) or results_dir"
            )

    def finished_as(self, cfg) -> dict | None:
        """The summary of a finished run that the job ``cfg`` would only skip (same config and
        epochs, or diverged), else None -- without taking the lock or touching a file."""
        summary = self.summary()
        if not summary or summary.get("status") not in FINISHED:
            return None
        try:
            self.check_same_config(cfg, but_epochs=True)
        except ConfigError:
            return None  # the job itself says what differs
        same_length = summary.get("epochs") in (None, cfg.epochs)
        return summary if same_length or summary["status"] == "diverged" else None

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
        last = rows[-1]
        finite = [r["test_acc"] for r in rows if math.isfinite(r.get("test_acc", math.nan))]
        summary = {
            "status": "complete",
            "epoch": int(last["epoch"]),
            "epochs": int(last["epoch"]),
            **{k: last.get(k) for k in ("test_acc", "test_loss", "train_acc", "train_loss")},
            "best_test_acc": max(finite, default=None),
            "wall_time_s": round(sum(r.get("epoch_time_s", 0.0) for r in rows), 2),
            **fields,
            "rebuilt": f"from history.csv and model.pt on {_now()}",
        }
        self.write_summary(**summary)
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
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.path} is in use by another process (it holds {self.path / '.lock'}); "
                "wait for it to finish or stop it"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing (only by the owner) -------------------------------------------------------------
    def write_config(self, cfg) -> None:
        _atomic_text(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))

    def write_history(self, rows: list[dict]) -> None:
        self.write_table(self.history_path, rows)

    def write_table(self, path: Path, rows: list[dict]) -> None:
        """Rewrite the CSV ``path`` from ``rows`` atomically."""
        if not rows:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

    def write_summary(self, **fields) -> None:
        previous = self.summary() or {}
        summary = {**previous, **fields, "updated": _now()}
        summary.setdefault("started", summary["updated"])
        _atomic_text(self.summary_path, json.dumps(_finite(summary), indent=2) + "\n")


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
