"""Collect every run under ``<results>/runs`` into tidy pandas frames.

A run is any directory holding a run record (:mod:`equinorm.run.record`), found wherever it is
under ``runs/``; what it is -- experiment, dataset, arch, norm, seed and variant (the keys its
config sets otherwise than its experiment, :mod:`equinorm.experiment.identity`; ``""`` for the
experiment itself) -- is read from what the run recorded (``summary.json``, else ``error.json``,
else ``config.yaml``), never from directory names. Only those files, ``history.csv``,
``equilibrium.csv`` and ``provenance.json`` are read, so runs copied from other machines just work.

Statuses: ``complete``, ``diverged``, ``failed`` (the last attempt recorded an error, ``error``)
and ``unfinished`` (running, interrupted, or without a readable summary). ``commit`` is the git
commit (``+dirty``: with uncommitted changes) of the code that trained the run, every attempt's
when a resumed run saw several (``a / b``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from equinorm.experiment.identity import dirname
from equinorm.report.setup import SETUP
from equinorm.run import provenance
from equinorm.run.record import ERROR_FILE, RunDir

log = logging.getLogger(__name__)
KEYS = ["experiment", "dataset", "arch", "variant", "norm", "seed"]
RECORDS = ("summary.json", ERROR_FILE, "config.yaml")  # a run directory holds one of them


@dataclass
class Results:
    runs: pd.DataFrame  # one row per run: KEYS + status, epoch(s), final metrics, SETUP, path
    history: pd.DataFrame  # one row per run and epoch: KEYS + status + history.csv columns
    equilibrium: pd.DataFrame  # Figure-1 diagnostic rows: KEYS + epoch, layer, positive, negative

    def experiments(self) -> list[str]:
        return sorted(self.runs["experiment"].unique()) if len(self.runs) else []


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        return None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError) as exc:
        log.warning("ignoring unreadable %s (%s)", path, exc)
        return None


def _run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` that holds a run record."""
    found = {p.parent for name in RECORDS for p in root.rglob(name)}
    moved = ("quarantine-",)  # an unfinished run's files, set aside when it restarted
    return sorted(
        p for p in found if not any(x.startswith(moved) for x in p.relative_to(root).parts)
    )


def identity(rundir: RunDir, summary: dict | None, error: dict | None) -> dict | None:
    """name, dataset, arch, norm, seed and variant items as the run recorded them."""
    for record in (summary, error):
        if record and all(k in record for k in ("name", "dataset", "arch", "norm", "seed")):
            return {k: record[k] for k in ("name", "dataset", "arch", "norm", "seed", "variant")}
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(rundir.config_path), resolve=False)
        return {
            "name": cfg["name"],
            **{k: cfg[k]["name"] for k in ("dataset", "arch", "norm")},
            "seed": cfg["seed"],
            "variant": cfg.get("variant"),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: no readable identity (%s)", rundir.path, exc)
        return None


def _commits(seed_dir: Path) -> str | None:
    labels = list(dict.fromkeys(provenance.commit_label(a) for a in provenance.read(seed_dir)))
    return " / ".join(labels) or None


def collect(results_dir: str | Path) -> Results:
    root = Path(results_dir) / "runs"
    runs, histories, equilibria = [], [], []
    for seed_dir in _run_dirs(root):
        rundir = RunDir(seed_dir)
        summary, error = rundir.summary(), rundir.error()
        if summary and summary.get("status") == "unreadable":
            log.warning("unreadable %s: counted as unfinished", rundir.summary_path)
        named = identity(rundir, summary, error)
        if named is None:
            continue
        history = _read_csv(rundir.history_path)
        summary = summary or {}
        status = summary.get("status")
        if status not in ("complete", "diverged"):
            status = "failed" if error is not None else "unfinished"
        items = dict(named["variant"] or {})
        key = {
            "experiment": named["name"],
            "dataset": named["dataset"],
            "arch": named["arch"],
            "variant": dirname(items) if items else "",
            "norm": named["norm"],
            "seed": int(named["seed"]),
        }
        last = history.iloc[-1] if history is not None and len(history) else None

        def pick(k, summary=summary, last=last):  # the summary's value, else the last epoch's
            return summary.get(k, last[k] if last is not None and k in last else None)

        runs.append(
            {
                **key,
                "status": status,
                "epoch": summary.get("epoch", int(last["epoch"]) if last is not None else 0),
                "epochs": summary.get("epochs"),
                "test_acc": pick("test_acc"),
                "test_loss": pick("test_loss"),
                "train_loss": pick("train_loss"),
                "diverged_epoch": summary.get("diverged_epoch"),
                "global_batch": summary.get("global_batch"),
                "batch_size": summary.get("batch_size"),
                "devices": _devices(summary),
                "width_mult": summary.get("width_mult"),
                "error": (error or {}).get("error", "") if status == "failed" else None,
                "commit": _commits(seed_dir),
                "path": str(seed_dir),
                "items": items,
            }
        )
        if history is not None and len(history):
            histories.append(history.assign(**key, status=status))
        eq = _read_csv(seed_dir / "equilibrium.csv")
        if eq is not None and len(eq):
            equilibria.append(eq.assign(**key, status=status))
    run_cols = [
        *KEYS,
        "status",
        "epoch",
        "epochs",
        "test_acc",
        "test_loss",
        "train_loss",
        "diverged_epoch",
        *SETUP,
        "error",
        "commit",
        "path",
        "items",
    ]
    frame = pd.DataFrame(runs, columns=run_cols)
    for col in ("test_acc", "test_loss", "train_loss"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return Results(frame, _concat(histories), _concat(equilibria))


def _devices(summary: dict) -> int | None:
    """Data-parallel devices of a run: processes x virtual devices per process."""
    if "world_size" not in summary:
        return None
    return int(summary["world_size"]) * int(summary.get("virtual_devices", 1))


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=[*KEYS, "status", "epoch"])
    return pd.concat(parts, ignore_index=True)
