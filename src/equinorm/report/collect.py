"""Collect every run under ``<results>/runs`` into tidy pandas frames.

Runs are identified by the directory layout alone --
``runs/<experiment>/<dataset>-<arch>-<norm>/[<variant>/]seed=<k>/``, where ``<variant>`` names the
overrides that change the experiment's own config (:mod:`equinorm.train.identity`; ``""`` for the
experiment itself) -- and only ``history.csv``, ``summary.json``, ``error.json`` and
``provenance.json`` are read, so runs copied from other machines just work. A directory with none
of them (e.g. one Hydra created for a job that never started) is ignored.

Statuses: ``complete``, ``diverged``, ``failed`` (the last attempt recorded an error, ``error``)
and ``unfinished`` (running, interrupted, or without a readable summary). ``commit`` is the git
commit (``+dirty``: with uncommitted changes) of the code that trained the run, every attempt's
when a resumed run saw several (``a / b``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from equinorm import provenance
from equinorm.report.setup import SETUP
from equinorm.train.rundir import ERROR_FILE

log = logging.getLogger(__name__)
SEED_DIR = re.compile(r"^seed=(\d+)$")
KEYS = ["experiment", "dataset", "arch", "variant", "norm", "seed"]


@dataclass
class Results:
    runs: pd.DataFrame  # one row per run: KEYS + status, epoch(s), final metrics, SETUP, path
    history: pd.DataFrame  # one row per run and epoch: KEYS + status + history.csv columns
    equilibrium: pd.DataFrame  # Figure-1 diagnostic rows: KEYS + epoch, layer, positive, negative

    def experiments(self) -> list[str]:
        return sorted(self.runs["experiment"].unique()) if len(self.runs) else []


def _parse_config(name: str) -> tuple[str, str, str] | None:
    parts = name.split("-")
    return tuple(parts) if len(parts) == 3 else None  # type: ignore[return-value]


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        return None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError) as exc:
        log.warning("ignoring unreadable %s (%s)", path, exc)
        return None


def _seed_dirs(root: Path):
    """(seed dir, experiment, "dataset-arch-norm", variant) of every run under ``root``."""
    for seed_dir in sorted(root.glob("*/*/seed=*")):
        yield seed_dir, seed_dir.parent.parent.name, seed_dir.parent.name, ""
    for seed_dir in sorted(root.glob("*/*/*/seed=*")):
        yield seed_dir, seed_dir.parents[2].name, seed_dir.parents[1].name, seed_dir.parent.name


def _error(seed_dir: Path) -> str | None:
    try:
        return str(json.loads((seed_dir / ERROR_FILE).read_text()).get("error", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError):
        return f"unreadable {ERROR_FILE}"


def _commits(seed_dir: Path) -> str | None:
    labels = list(dict.fromkeys(provenance.commit_label(a) for a in provenance.read(seed_dir)))
    return " / ".join(labels) or None


def collect(results_dir: str | Path) -> Results:
    root = Path(results_dir) / "runs"
    runs, histories, equilibria = [], [], []
    for seed_dir, experiment, config, variant in _seed_dirs(root):
        m = SEED_DIR.match(seed_dir.name)
        parsed = _parse_config(config)
        if not (seed_dir.is_dir() and m and parsed):
            continue
        history = _read_csv(seed_dir / "history.csv")
        error = _error(seed_dir)
        summary = None
        if (seed_dir / "summary.json").is_file():
            try:
                summary = json.loads((seed_dir / "summary.json").read_text())
            except (OSError, ValueError):
                log.warning("unreadable %s: counted as unfinished", seed_dir / "summary.json")
                summary = {}
        if history is None and summary is None and error is None:
            continue
        summary = summary or {}
        status = summary.get("status")
        if status not in ("complete", "diverged"):
            status = "failed" if error is not None else "unfinished"
        dataset, arch, norm = parsed
        key = {
            "experiment": experiment,
            "dataset": dataset,
            "arch": arch,
            "variant": variant,
            "norm": norm,
            "seed": int(m.group(1)),
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
                "error": error if status == "failed" else None,
                "commit": _commits(seed_dir),
                "path": str(seed_dir),
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
