"""The checks of a composed job that no constructor owns: each bad value fails with one line
naming its key, before any file is written or any data is read.

Types, unknown keys and choices are refused while the config is composed (the schema,
:mod:`equinorm.experiment.schema`); the trainer's own objects check their options when they are
built (the schedule, mixup: :func:`equinorm.train.build.check`); this module checks the rest --
ranges, relations between keys, the dataset's and the architecture's options, the norm's layer
options, the device, the results directory, the data-parallel split, the SLURM request, the
GPUs submitit's local launcher shows a job.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from equinorm.data import dataset_info
from equinorm.data.loaders import COMMON_KEYS, loader_kind, source_of
from equinorm.data.registry import source_options
from equinorm.errors import ConfigError
from equinorm.experiment.identity import flatten
from equinorm.experiment.slurm import check_launcher
from equinorm.layers import get_norm
from equinorm.models import arch_options

AUTO_BOOL = ("auto", True, False)


def _positive_int(key: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def _finite(cfg: DictConfig) -> None:
    """Every value resolves (interpolations, no ``???``) and none is nan or inf (each range
    check below compares, and a nan passes every comparison: schedule.lr=nan trained to a
    divergence). The Hydra node, where there is one, is Hydra's to resolve."""
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    data = OmegaConf.to_container(plain, resolve=True, throw_on_missing=True, enum_to_str=True)
    for key, value in flatten(data).items():
        if any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(value)):
            raise ConfigError(f"{key}={value} must be a finite number")


def _leaves(value) -> list:
    """A value's numbers, lists flattened (``schedule.lr_points`` is a list of pairs)."""
    return [x for v in value for x in _leaves(v)] if isinstance(value, list) else [value]


def _auto_bool(key: str, value) -> None:
    if value not in AUTO_BOOL:
        raise ConfigError(f"{key}={value!r} is not one of auto, true, false")


def options(cfg: DictConfig, group: str) -> dict:
    """A group's options for its builder: every key but ``name``."""
    return {
        k: v
        for k, v in OmegaConf.to_container(cfg[group], resolve=True, enum_to_str=True).items()
        if k != "name"
    }


def device(value: str) -> torch.device:
    """``train.device`` as a torch device (``auto``: CUDA where there is one)."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = _spelled(value)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={value} but no CUDA device is available; use train.device=auto or cpu"
        )
    if dev.type == "cuda" and (dev.index or 0) >= (count := torch.cuda.device_count()):
        raise ConfigError(
            f"train.device={value} but this machine has {count} CUDA device(s): "
            f"cuda:0 to cuda:{count - 1}"
        )
    return dev


def _spelled(value: str) -> torch.device:
    try:
        dev = torch.device(value)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"train.device={value!r} is not a device the suite runs on (auto, cpu, cuda, cuda:<n>)"
        )
    return dev


def check_config(cfg: DictConfig, devices_here: bool = True) -> None:
    """Raise :class:`ConfigError` naming the first invalid key. ``devices_here=False`` (jobs
    submitted to another machine) checks ``train.device``'s spelling, not that it exists here."""
    _finite(cfg)
    sweeper = OmegaConf.select(cfg, "hydra.sweeper") or {}  # composed with the Hydra node
    for key in ("n_trials", "n_jobs", "max_batch_size"):  # 0 was Optuna's or Hydra's traceback
        if key in sweeper:
            _positive_int(f"hydra.sweeper.{key}", sweeper[key], key == "max_batch_size")
    if submitit(cfg):
        _launcher_counts(cfg.hydra.launcher)
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} must be a non-negative integer")
    # a leading '-' reads as an option to every command given the folder or the name
    if not re.fullmatch(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*", str(cfg.name)):
        raise ConfigError(
            f"name={cfg.name!r}: an experiment name is one folder name under "
            f"{cfg.results_dir}/runs (letters, digits and _ . + -, not starting with . or -)"
        )
    _positive_int("epochs", cfg.epochs)
    try:
        info = dataset_info(cfg.dataset.name)
    except KeyError as exc:
        raise ConfigError(f"dataset.name: {exc.args[0]}") from None
    known = COMMON_KEYS | set(source_options(cfg.dataset.name))
    extra = sorted(set(cfg.dataset) - known)
    if extra:
        raise ConfigError(
            f"dataset.{extra[0]} is not an option of {cfg.dataset.name}; valid: "
            f"{', '.join(sorted(known))}"
        )
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True, enum_to_str=True)
    try:  # the source owns its options (digits: test_fraction, split_seed); it reads no file
        train_size = source_of(dataset).train_size
    except ValueError as exc:
        raise ConfigError(f"dataset.{exc}") from None
    loader_kind(dataset, info)
    if cfg.dataset.workers < 0:
        raise ConfigError(f"dataset.workers={cfg.dataset.workers} must be >= 0")
    if not 0 <= cfg.dataset.val_size < max(train_size, 2):  # per class: when the data loads
        raise ConfigError(
            f"dataset.val_size={cfg.dataset.val_size} must be 0 (no validation split) or "
            f"1..{train_size - 1} ({info.name} trains on {train_size:,} images)"
        )
    if cfg.dataset.augment.crop_padding < 0:
        raise ConfigError("dataset.augment.crop_padding must be >= 0")
    if cfg.dataset.augment.crop_padding >= info.image_size:  # blank images: EquiNorm's 0/0
        raise ConfigError(
            f"dataset.augment.crop_padding={cfg.dataset.augment.crop_padding} must be below the "
            f"image size of {info.name} ({info.image_size}): a crop this far out can miss the image"
        )
    try:
        valid = arch_options(cfg.arch.name)
    except KeyError as exc:  # arch.name=x
        raise ConfigError(f"arch.name={cfg.arch.name}: {exc.args[0]}") from None
    bad = sorted(set(options(cfg, "arch")) - set(valid) - {"zero_init_residual"})
    if bad:
        raise ConfigError(
            f"arch.{bad[0]} is not an option of {cfg.arch.name}; valid: "
            f"{', '.join(valid)}, zero_init_residual"
        )
    if cfg.arch.width_mult <= 0:
        raise ConfigError(f"arch.width_mult={cfg.arch.width_mult} must be > 0")
    try:  # the layers own their options: build one of each
        spec = get_norm(cfg.norm.name, **options(cfg, "norm"))
        spec.conv_layer(4, 4, 3)
        spec.norm_layer(4)
    except KeyError as exc:  # norm.name=x, or a config file of a norm no package provides
        raise ConfigError(f"norm.name={cfg.norm.name}: {exc.args[0]}") from None
    except TypeError as exc:
        raise ConfigError(f"norm: {exc}") from None
    except ValueError as exc:  # out-of-range layer options, e.g. stat_fraction
        raise ConfigError(f"norm.{exc!s}") from None
    if cfg.optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={cfg.optim.weight_decay} must be >= 0")
    if cfg.optim.no_decay_max_rank < -1:
        raise ConfigError(f"optim.no_decay_max_rank={cfg.optim.no_decay_max_rank} must be >= -1")
    t = cfg.train
    for key in ("batch_size", "eval_batch_size"):
        _positive_int(f"train.{key}", t[key])
    for key in ("devices", "max_train_batches", "max_eval_batches", "threads"):
        _positive_int(f"train.{key}", t[key], allow_none=True)
    _auto_bool("train.channels_last", t.channels_last)
    _auto_bool("train.progress", t.progress)
    if t.compile_mode != "default" and not t.compile:  # else the mode would go unused, silently
        raise ConfigError(
            f"train.compile_mode={t.compile_mode.value} compiles nothing without train.compile=true"
        )
    if devices_here:
        device(t.device)
    elif t.device != "auto":
        _spelled(t.device)


def virtual_devices(cfg: DictConfig, world_size: int) -> int:
    """Devices each of ``world_size`` processes runs in turn (``train.devices / world_size``)."""
    devices = cfg.train.devices or world_size
    if devices % world_size:
        raise ConfigError(
            f"train.devices={devices} does not split over {world_size} processes; "
            f"use a multiple of {world_size} or torchrun --nproc_per_node dividing {devices}"
        )
    return devices // world_size


def check_writable(results_dir: str) -> None:
    """``results_dir`` (or its first existing parent) is a directory this process may write."""
    if not str(results_dir).strip():  # runs/ would land in the working directory
        raise ConfigError(
            "results_dir= is empty (an unset shell variable?); results_dir=. writes runs/ here"
        )
    if str(results_dir).startswith("~"):  # a folder named '~' in the working directory
        raise ConfigError(
            f"results_dir={results_dir}: '~' is not expanded here (the shell leaves it when "
            f"quoted, zsh after '='); write the path: results_dir={os.path.expanduser(results_dir)}"
        )
    path = Path(results_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"results_dir={results_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"results_dir={results_dir}: cannot write to {existing} (read-only or not yours); "
            "choose another results_dir=..."
        )


def submitit(cfg: DictConfig) -> str | None:
    """``slurm`` or ``local``: the submitit launcher the jobs go through; None: another."""
    target = OmegaConf.select(cfg, "hydra.launcher._target_", default="") or ""
    kinds = {"SlurmLauncher": "slurm", "LocalLauncher": "local"}
    return kinds.get(target.rsplit(".", 1)[-1]) if "submitit" in target else None


def _launcher_counts(launcher: DictConfig) -> None:
    """submitit's request: a count of 0 (or less) was a ZeroDivisionError, an assert in submitit,
    or sbatch's error on the cluster."""
    for key in ("nodes", "tasks_per_node", "timeout_min", "cpus_per_task", "mem_gb"):
        optional = key in ("cpus_per_task", "mem_gb")  # null: the cluster's default
        _positive_int(f"hydra.launcher.{key}", launcher.get(key), optional)
    gpus, tasks = launcher.get("gpus_per_node"), launcher.tasks_per_node
    if gpus is not None and gpus < 0:  # an integer: the plugin's schema says so
        raise ConfigError(f"hydra.launcher.gpus_per_node={gpus} must be an integer >= 0")
    if gpus and tasks > gpus:  # DDP: rank k trains on GPU k (train/distributed.py)
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks}: each of a job's processes trains on a GPU of "
            f"its own, and gpus_per_node={gpus}: set hydra.launcher.gpus_per_node={tasks}"
        )


def check_local(cfg: DictConfig) -> None:
    """submitit's local launcher runs a job on this one machine, and shows it the first
    ``gpus_per_node`` GPUs (none when unset): there must be as many here (more are GPU ids CUDA
    skips: a job of several processes fails in its ranks past the real ones), and
    ``train.device`` must be among them, or ``auto`` would train on the CPU without a word."""
    launcher, dev = cfg.hydra.launcher, device(cfg.train.device)
    if launcher.nodes != 1:
        raise ConfigError(
            f"hydra.launcher.nodes={launcher.nodes}: submitit_local runs on this machine "
            "(nodes=1); several machines: hydra/launcher=submitit_slurm_gpu"
        )
    gpus, need = int(launcher.get("gpus_per_node") or 0), (dev.index or 0) + 1
    if gpus > (have := torch.cuda.device_count()):
        fix = f"<={have} (every job is shown the same)" if have else "=0 or leave it out"
        raise ConfigError(
            f"hydra.launcher.gpus_per_node={gpus} exceeds the {have} GPU(s) of this machine, "
            f"where submitit_local runs its jobs: set hydra.launcher.gpus_per_node{fix}"
        )
    if dev.type == "cuda" and need > gpus:
        outcome = "train on the CPU" if cfg.train.device == "auto" else "find no such device"
        raise ConfigError(
            f"hydra/launcher=submitit_local shows each job {gpus} GPU(s) "
            f"(hydra.launcher.gpus_per_node={launcher.get('gpus_per_node') or 'null'}), so "
            f"train.device={cfg.train.device} would {outcome}: set "
            f"hydra.launcher.gpus_per_node={need} (every job gets the same) or "
            "train.device=cpu"
        )


def check_job(cfg: DictConfig) -> None:
    """What a job of the command line must pass before anything is launched or written (a
    composed config with its Hydra node)."""
    kind = submitit(cfg)  # SLURM's jobs run on another machine: its devices are not this one's
    check_config(cfg, devices_here=kind != "slurm")  # interpolations and ??? resolved first
    if kind == "slurm":
        check_launcher(cfg.hydra.launcher)  # the request fits the partition (sinfo)
    elif kind == "local":
        check_local(cfg)
    check_writable(cfg.results_dir)
    virtual_devices(cfg, int(os.environ.get("WORLD_SIZE", "1")))


__all__ = ["check_config", "check_job", "check_writable", "device", "options", "virtual_devices"]
