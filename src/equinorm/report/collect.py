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
when a resumed run saw several (``a / b``; ``commit_full`` with whole hashes); ``resumed_under``
names the execution settings (threads, device, compile, impl) that changed between its attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from equinorm.experiment.identity import dirname
from equinorm.report.setup import SETUP
from equinorm.run import provenance
from equinorm.run.record import METRICS, RunDir, run_dirs

KEYS = ["experiment", "dataset", "arch", "variant", "norm", "seed"]


@dataclass
class Results:
    runs: pd.DataFrame  # one row per run: KEYS + status, epoch(s), final metrics, SETUP, path
    history: pd.DataFrame  # one row per run and epoch: KEYS + status + history.csv columns
    equilibrium: pd.DataFrame  # Figure-1 diagnostic rows: KEYS + epoch, layer, positive, negative
    skipped: list[str] = field(default_factory=list)  # "<file>: why", what could not be read

    def experiments(self) -> list[str]:
        return sorted(self.runs["experiment"].unique()) if len(self.runs) else []


EQUILIBRIUM = ("epoch", "layer", "positive", "negative")  # equilibrium.csv's columns
HISTORY = ("epoch", *METRICS, "epoch_time_s")  # history.csv columns every run has


def _read_csv(path: Path, numeric: bool = False, needs: tuple[str, ...] = ()) -> pd.DataFrame:
    """The table (``numeric``: every value a number, or empty/nan; ``needs``: columns it must
    have); raises ``ValueError`` naming what is wrong, ``FileNotFoundError`` when there is
    none."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc).strip().splitlines()[-1]) from exc
    missing = [c for c in needs if c not in frame.columns]
    if missing:  # a damaged header: a header of other columns, or a line of text
        named, header = ", ".join(missing), ", ".join(frame.columns)
        plural = "s" if len(missing) > 1 else ""
        raise ValueError(f"no {named} column{plural} (its header: {header})")
    if numeric:
        for col in frame.columns:
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = values.isna() & frame[col].notna()
            if bad.any():  # a garbage line, a repeated header
                row = int(bad.idxmax())
                raise ValueError(f"line {row + 2}: {col} = {frame[col][row]!r} is not a number")
            frame[col] = values
    return frame


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
    except Exception as exc:  # a missing or hand-damaged config.yaml (a YAML error, a key)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{rundir.config_path}: no readable identity ({why})") from exc


def _commits(attempts: list[dict], full: bool = False) -> str | None:
    """Every attempt's commit label (``abc1234`` or ``abc1234+dirty``; ``full``: the whole hash),
    ``" / "``-joined in order, once each."""
    labels = [provenance.commit_label(a, full) for a in attempts]
    return " / ".join(dict.fromkeys(labels)) or None


def collect(results_dir: str | Path) -> Results:
    root = Path(results_dir) / "runs"
    runs, histories, equilibria = [], [], []
    skipped: list[str] = []  # scripts/report.py names each
    skip = skipped.append
    for seed_dir in run_dirs(root):
        rundir = RunDir(seed_dir)
        summary, error = rundir.summary(), rundir.error()
        if summary and summary.get("status") == "unreadable":
            skip(f"{rundir.summary_path}: unreadable (the run counts as unfinished)")
        try:
            named = identity(rundir, summary, error)
        except ValueError as exc:
            skip(str(exc))
            continue
        history, unread = None, ""  # unread: why a run that has epochs has no curves
        try:
            history = _read_csv(rundir.history_path, numeric=True, needs=("epoch",))
        except FileNotFoundError:
            if (summary or {}).get("status") in ("complete", "diverged"):
                unread = "no history.csv"
                skip(f"{rundir.history_path}: not found (no curves)")
        except (ValueError, OSError) as exc:
            unread = f"history.csv {exc}"
            skip(f"{rundir.history_path}: {exc} (no curves)")
        summary = summary or {}
        attempts = provenance.read(seed_dir)
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
                "val_acc": pick("val_acc"),  # with dataset.val_size only
                "wall_time_s": summary.get("wall_time_s"),
                "diverged_epoch": summary.get("diverged_epoch"),
                "global_batch": summary.get("global_batch"),
                "batch_size": summary.get("batch_size"),
                "devices": _devices(summary),
                "width_mult": summary.get("width_mult"),
                "precision": summary.get("precision"),
                "error": (error or {}).get("error", "") if status == "failed" else None,
                "unread": unread,
                "commit": _commits(attempts),
                "commit_full": _commits(attempts, full=True),
                "resumed_under": provenance.execution_changes(attempts),
                "path": str(seed_dir),
                "items": items,
            }
        )
        if history is not None and len(history):
            histories.append(history.assign(**key, status=status))
        try:
            eq = _read_csv(seed_dir / "equilibrium.csv", needs=EQUILIBRIUM)
        except FileNotFoundError:
            eq = None
        except (ValueError, OSError) as exc:
            eq = None
            skip(f"{seed_dir / 'equilibrium.csv'}: {exc}")
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
        "val_acc",
        "wall_time_s",
        "diverged_epoch",
        *SETUP,
        "error",
        "unread",
        "commit",
        "commit_full",
        "resumed_under",
        "path",
        "items",
    ]
    frame = pd.DataFrame(runs, columns=run_cols)
    for col in ("test_acc", "test_loss", "train_loss", "val_acc", "wall_time_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return Results(frame, _concat(histories, HISTORY), _concat(equilibria, EQUILIBRIUM), skipped)


def _devices(summary: dict) -> int | None:
    """Data-parallel devices of a run: processes x virtual devices per process."""
    if "world_size" not in summary:
        return None
    return int(summary["world_size"]) * int(summary.get("virtual_devices", 1))


def _concat(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    """The runs' rows as one table; none (no run has ended an epoch yet): the ``columns`` that
    the figures and tables read, with no row (it was KeyError: 'test_acc')."""
    if not parts:
        return pd.DataFrame(columns=[*KEYS, "status", *columns])
    return pd.concat(parts, ignore_index=True)
