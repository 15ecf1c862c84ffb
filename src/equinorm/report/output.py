"""Where the report's files land: all at once per experiment, never half written, never over a
file git tracks unless asked.

The writers draw into a staging folder beside the output (:func:`staging`); :func:`publish` then
renames each file into place (``os.replace``: atomic on one file system), so Ctrl-C, a full disk or
a failing figure leaves every earlier file whole and no truncated PDF. A destination that git
tracks (the README's demo figures and tables in ``results/``) is left as it is unless
``overwrite_tracked`` -- ``make figures`` over your own runs in ``results/`` cannot silently
replace the committed artefacts. What an experiment's previous report placed and this one does not
(a variant's runs deleted) is removed (:func:`retire`), so the folder holds one report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from equinorm import atomic


@contextlib.contextmanager
def staging(out_dir: Path) -> Iterator[Path]:
    """A fresh folder inside ``out_dir`` (same file system), removed afterwards."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def tracked(paths: list[Path], root: Path) -> set[Path]:
    """Those of ``paths`` (under ``root``) that git tracks; none outside a work tree or without
    git."""
    names = [str(p.relative_to(root)) for p in paths if p.exists()]
    if not names:
        return set()
    try:  # git lists the tracked ones among them, relative to cwd
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *names],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return set()
    return {root / name for name in out.stdout.split("\0") if name}


def publish(
    stage: Path, staged: list[Path], out_dir: Path, overwrite_tracked: bool = False
) -> tuple[list[Path], list[Path]]:
    """Move ``staged`` files (under ``stage``) to the same places under ``out_dir``; returns
    (written, kept: tracked destinations left as they were)."""
    targets = {path: out_dir / path.relative_to(stage) for path in staged}
    keep = set() if overwrite_tracked else tracked(list(targets.values()), out_dir)
    written, kept = [], []
    for path, target in targets.items():
        if target in keep:
            kept.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        written.append(target)
    return written, kept


def retire(
    out_dir: Path, experiment: str, placed: list[Path], overwrite_tracked: bool = False
) -> list[Path]:
    """Remove the files that the previous report of ``experiment`` placed in ``out_dir`` and this
    one did not (``placed``): the figure of a variant whose runs are gone must not be read as
    today's. Only the report's own files go (``.equinorm-<experiment>.json`` lists them), never one
    that git tracks unless ``overwrite_tracked``; returns those removed."""
    manifest = out_dir / f".equinorm-{experiment}.json"
    try:
        before = {out_dir / name for name in json.loads(manifest.read_text())}
    except (OSError, ValueError, TypeError):
        before = set()
    root = out_dir.resolve()
    stale = sorted(p for p in before - set(placed) if p.resolve().is_relative_to(root))
    keep = set() if overwrite_tracked else tracked(stale, out_dir)
    removed = [p for p in stale if p not in keep and p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    names = sorted(str(p.relative_to(out_dir)) for p in placed)
    with contextlib.suppress(OSError):  # the report is written; only the next one's removal lost
        atomic.write_text(manifest, json.dumps(names, indent=0) + "\n")
    return removed


__all__ = ["publish", "retire", "staging", "tracked"]
