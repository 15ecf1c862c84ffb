"""Where a result came from (paper section 6.5's 10 seeds per cell are only comparable when they
ran the same code): the git commit of the source and whether it had uncommitted changes, the
command-line overrides as typed, the library versions (torch, torchvision, CUDA, cuDNN), the
device (on a CPU also its threads and vector kernels), the world size, the host and the start and
end of every attempt.

Every run directory holds ``provenance.json`` -- ``{"attempts": [...]}``, one entry per time the
run was started or resumed (:func:`start_attempt`, :func:`end_attempt`) -- and the report warns
about, or filters on, runs of one cell made by different commits (:mod:`equinorm.report.collect`).
An attempt made with uncommitted changes keeps them beside it (``code-<k>.diff``, :func:`changes`):
``git checkout <commit> && git apply code-<k>.diff`` gives back the code it ran.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

from equinorm import __version__, atomic

log = logging.getLogger("equinorm")
FILE = "provenance.json"
SOURCE = Path(__file__).resolve().parents[3]  # the checkout's root in a source install


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with the number of cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def _git(*args: str, exit_codes: tuple[int, ...] = (0,)) -> str | None:
    """git's output as it printed it (``status --porcelain`` lines start with a blank); None when
    git is missing or exits otherwise than ``exit_codes`` (``diff --no-index``: 1, different)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode in exit_codes else None


#: an untracked file larger than this is named in the diff, not copied into it (data, not code)
UNTRACKED_MAX_BYTES = 1_000_000


def _paths(outputs: str | None) -> list[str]:
    """git's pathspec for the checkout less ``outputs`` (a results_dir inside it: runs are not
    code, and each would make the next run's code differ)."""
    spec = ["--", "."]
    with contextlib.suppress(ValueError):  # outputs outside the checkout: nothing to leave out
        inside = Path(outputs).resolve().relative_to(SOURCE.resolve()) if outputs else None
        if inside is not None and inside.parts:
            spec.append(f":(exclude,literal){inside.as_posix()}")
    return spec


@lru_cache(maxsize=4)
def changes(outputs: str | None = None) -> str:
    """The uncommitted changes of the checkout (less ``outputs``) as one patch against its commit
    (``git apply`` takes it): the tracked files' (staged or not) and every untracked file git
    does not ignore, as a new file; binary files and large untracked ones are only named ('' when
    clean or outside a checkout)."""
    if not (SOURCE / ".git").exists():
        return ""
    paths = _paths(outputs)
    numstat = (_git("diff", "HEAD", "--no-renames", "--numstat", "-z", *paths) or "").split("\0")
    binary = [line[4:] for line in numstat if line.startswith("-\t-\t")]
    parts = [f"# not copied: {name} (binary)\n" for name in binary]
    excluded = [f":(exclude,literal){name}" for name in binary]
    parts.append(_git("diff", "HEAD", "--no-renames", *paths, *excluded) or "")
    untracked = _git("ls-files", "--others", "--exclude-standard", "-z", *paths) or ""
    for name in untracked.split("\0"):
        path = SOURCE / name
        if not name or not path.is_file():
            continue
        with open(path, "rb") as f:
            head = f.read(8192)
        size = path.stat().st_size
        if b"\0" in head or size > UNTRACKED_MAX_BYTES:
            why = "binary" if b"\0" in head else f"{size} bytes"
            parts.insert(0, f"# not copied: {name} ({why})\n")
            continue
        parts.append(_git("diff", "--no-index", "--", os.devnull, name, exit_codes=(0, 1)) or "")
    return "".join(parts)


def _installed_commit() -> dict:
    """The commit of an install from a git URL (``pip install git+https://...@rev``: pip records
    it in the distribution's PEP 610 ``direct_url.json``); the installed files are that commit."""
    try:
        direct = json.loads(metadata.distribution("equinorm").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return {}
    vcs = direct.get("vcs_info") or {}
    if vcs.get("vcs") != "git" or not vcs.get("commit_id"):
        return {}  # a wheel or a local folder: no commit recorded
    return {"commit": vcs["commit_id"], "dirty": False, "source": direct.get("url")}


@lru_cache(maxsize=4)
def code(outputs: str | None = None) -> dict:
    """``commit`` (None outside a git checkout, e.g. an installed wheel, but for an install from a
    git URL), ``dirty`` (files changed since that commit, new files that git does not ignore
    included: a new experiment file is code; ``outputs``, a results_dir, left out), the first
    changed files and the hash of their :func:`changes`, with the package version."""
    info: dict = {"version": __version__, "commit": None, "dirty": None}
    if not (SOURCE / ".git").exists():
        return info | _installed_commit()
    commit = (_git("rev-parse", "HEAD") or "").strip()
    status = _git("status", "--porcelain", "--untracked-files=all", *_paths(outputs))
    if commit:
        info["commit"] = commit
    if status is not None:
        changed = [line[3:] for line in status.splitlines() if line.strip()]
        info["dirty"] = bool(changed)
        if changed:
            info["changed"] = changed[:20]
        patch = changes(outputs) if changed else ""
        if patch:  # tells two runs of one commit with other changes apart (commit_label)
            info["diff_sha256"] = hashlib.sha256(patch.encode()).hexdigest()
    return info


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


#: the environment variables that cap the vector code of torch's two CPU libraries
LIBRARY_ISA = {"oneDNN": "ONEDNN_MAX_CPU_ISA", "MKL": "MKL_ENABLE_INSTRUCTIONS"}


def cpu_kernels() -> str:
    """The vector code torch's CPU kernels run (its dispatch: AVX512, AVX2, ...), and oneDNN's and
    MKL's caps where the environment sets them: two CPUs with different vector units give
    different last digits, and a run that amplifies them (a diverging seed) different results
    (docs/runs.md)."""
    caps = [f"{lib} {os.environ[var]}" for lib, var in LIBRARY_ISA.items() if os.environ.get(var)]
    return ", ".join([torch.backends.cpu.get_cpu_capability(), *caps])


def libraries() -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
    }


def attempt(
    device: torch.device,
    world_size: int,
    overrides: list[str] | None = None,
    outputs: str | None = None,
    **execution,
) -> dict:
    """What one start (or resume) of a run ran on; ``end`` and ``outcome`` come later;
    ``overrides``: the command line's, as typed (None outside the command line); ``outputs``: the
    results_dir, which is not code (:func:`code`); ``execution``:
    the precision the run computes in (``train.precision=auto`` resolved) and the settings that
    change the numbers' last digits but not what is computed (``channels_last``, ``compile``,
    ``impl``), which the report compares across a run's attempts (:data:`EXECUTION`)."""
    return {
        "start": _now(),
        "end": None,
        "outcome": None,
        **code(outputs),
        "overrides": None if overrides is None else list(overrides),
        "argv": sys.argv[1:],
        **libraries(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),  # CPU results repeat bit for bit only at one count
        "cpu_kernels": cpu_kernels() if device.type == "cpu" else None,  # ... and one vector unit
        # cuDNN picks its fastest algorithms per shape (train/run.py sets it on CUDA): the GPU
        # numbers then repeat only up to those choices
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if device.type == "cuda" else None,
        "world_size": world_size,
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **execution,
    }


def _attempts(path: Path) -> list[dict] | None:
    """The attempts recorded in ``path``: [] when there is no record, None when it is damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return None
    attempts = data.get("attempts") if isinstance(data, dict) else None
    return attempts if isinstance(attempts, list) else None


def read(run_dir: str | Path) -> list[dict]:
    """The attempts recorded in ``run_dir`` ([] when none or unreadable)."""
    return _attempts(Path(run_dir) / FILE) or []


def _write(run_dir: Path, attempts: list[dict]) -> None:
    atomic.write_text(Path(run_dir) / FILE, json.dumps({"attempts": attempts}, indent=2) + "\n")


def start_attempt(
    run_dir: str | Path,
    device: torch.device,
    world_size: int,
    overrides=None,
    outputs: str | None = None,
    **execution,
) -> None:
    """Record a new attempt; one made with uncommitted changes keeps them in ``code-<k>.diff``
    (``k``: the attempt's number, or past every earlier attempt's diff). A damaged
    record is kept as ``provenance.json.bad``, and said, before a new one starts."""
    path = Path(run_dir) / FILE
    attempts = _attempts(path)
    if attempts is None:
        path.replace(path.with_name(f"{FILE}.bad"))
        log.warning(
            "%s was unreadable: kept as %s.bad; the attempts before this one are recorded there "
            "only",
            path,
            FILE,
        )
        attempts = []
    entry = attempt(device, world_size, overrides, outputs, **execution)
    if entry.get("diff_sha256"):
        earlier = [int(d.stem[5:]) for d in path.parent.glob("code-*.diff") if d.stem[5:].isdigit()]
        entry["diff"] = f"code-{max([len(attempts), *earlier]) + 1}.diff"  # never an earlier one
        atomic.write_text(Path(run_dir) / entry["diff"], changes(outputs))
    _write(Path(run_dir), [*attempts, entry])


def end_attempt(run_dir: str | Path, outcome: str) -> None:
    """Close the last attempt: its end time and how it ended (complete, diverged, stopped,
    failed)."""
    attempts = read(run_dir)
    if attempts:
        attempts[-1] |= {"end": _now(), "outcome": outcome}
        _write(Path(run_dir), attempts)


#: what a resume must keep to continue bit for bit (the run's identity aside): a run whose
#: attempts differ in one of these is flagged by the report
EXECUTION = (
    "device",
    "threads",
    "cpu_kernels",
    "channels_last",
    "compile",
    "compile_mode",
    "impl",
)


def execution_changes(attempts: list[dict]) -> str:
    """'' when every attempt ran alike; else what changed, e.g. ``threads 4 -> 2``."""
    changed = []
    for key in EXECUTION:
        values = list(dict.fromkeys(str(a[key]) for a in attempts if a.get(key) is not None))
        if len(values) > 1:
            changed.append(f"{key} {' -> '.join(values)}")
    return ", ".join(changed)


def version_line() -> str:
    """``--version``: this code (the commit a run would record) and its main libraries."""
    lib = libraries()
    return (
        f"equinorm {__version__} (commit {commit_label(code())}); torch {lib['torch']}, "
        f"torchvision {lib['torchvision']}, hydra-core {_version('hydra-core')}, "
        f"Python {lib['python']}"
    )


def commit_label(info: dict, full: bool = False) -> str:
    """``abc1234`` / ``abc1234+dirty.5f3a9c1`` (the first digits of its diff's SHA-256: other
    uncommitted changes, another label) / ``abc1234+dirty`` (no diff kept) / ``unknown`` for one
    attempt's code (``full``: the whole commit hash)."""
    commit = info.get("commit")
    if not commit:
        return "unknown"
    label = commit if full else commit[:7]
    if not info.get("dirty"):
        return label
    return f"{label}+dirty" + (f".{info['diff_sha256'][:7]}" if info.get("diff_sha256") else "")


__all__ = [
    "EXECUTION",
    "FILE",
    "changes",
    "code",
    "commit_label",
    "device_name",
    "end_attempt",
    "execution_changes",
    "read",
    "start_attempt",
    "version_line",
]
