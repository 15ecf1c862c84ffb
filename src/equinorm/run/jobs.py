"""The jobs a searching sweeper (Optuna, ...) launched, as each job records itself in its sweep's
folder: ``<sweep dir>/jobs/<job number>.json`` holds its overrides and run directory. The sweep's
tally (:mod:`equinorm.launch.search`) reads them back whatever ran the jobs (this process, joblib's
workers, SLURM nodes), as equinorm's own sweeper reads the jobs it launched.
"""

from __future__ import annotations

import json
from pathlib import Path

from equinorm import atomic
from equinorm.run.record import RunDir


def record(
    sweep_dir: str | Path, number: int, overrides: list[str], run_dir: str | None, skipped: bool
) -> None:
    """Record job ``number`` of a sweep: its overrides, run directory (None: it has none) and
    whether the run had finished before (a value drawn twice: skipped, not trained again)."""
    path = Path(sweep_dir) / "jobs" / f"{number}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    job = {"overrides": overrides, "run_dir": run_dir, "skipped": skipped}
    atomic.write_text(path, json.dumps(job))


def recorded(sweep_dir: str | Path) -> list[tuple[list[str], RunDir | None, bool]]:
    """The recorded jobs of a sweep, in launch order: (overrides, run directory, skipped)."""
    jobs = []
    paths = sorted((Path(sweep_dir) / "jobs").glob("*.json"), key=lambda p: int(p.stem))
    for path in paths:
        job = json.loads(path.read_text())
        rundir = RunDir(job["run_dir"]) if job.get("run_dir") else None
        jobs.append((list(job["overrides"]), rundir, bool(job.get("skipped"))))
    return jobs


__all__ = ["record", "recorded"]
