"""Check a composed config before any work: every bad value fails with a message naming its key.

Hydra already refuses unknown keys (struct mode) and unknown group choices (listing the valid
ones); this module checks values and builds the cheap objects whose constructors validate
themselves (norm, schedule, mixup), so a typo costs seconds, not a queued GPU job.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from equinorm.data import dataset_info
from equinorm.data.loaders import COMMON_KEYS, LOADERS
from equinorm.data.registry import source_options
from equinorm.errors import ConfigError
from equinorm.layers import NORMS, get_norm
from equinorm.models import ARCHS, arch_options
from equinorm.train.mixup import Mixup
from equinorm.train.schedules import Schedule
from equinorm.train.wandb_logger import MODES

PRECISIONS = ("auto", "fp32", "bf16")
AUTO_BOOL = ("auto", True, False)


def _choice(key: str, value, valid) -> None:
    if value not in valid:
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in valid)
        raise ConfigError(f"{key}={value!r} is not one of {shown}")


def _positive_int(key: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer")


def _non_negative(key: str, value) -> None:
    if value < 0:
        raise ConfigError(f"{key}={value!r} must be >= 0")


def norm_options(cfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.norm, resolve=True).items() if k != "name"}


def arch_kwargs(cfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.arch, resolve=True).items() if k != "name"}


def _device_name(value: str) -> torch.device:
    try:
        return torch.device(value)
    except RuntimeError:
        raise ConfigError(
            f"train.device={value!r} is not a device (auto, cpu, cuda, cuda:<n>)"
        ) from None


def resolve_device(value: str) -> torch.device:
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = _device_name(value)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={value} but no CUDA device is available; use train.device=auto or cpu"
        )
    return device


def check_config(cfg: DictConfig, devices_here: bool = True) -> None:
    """Raise :class:`ConfigError` naming the first invalid key. ``devices_here=False`` (jobs
    submitted to another machine) checks ``train.device``'s spelling, not that it exists here."""
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} must be a non-negative integer")
    _positive_int("epochs", cfg.epochs)
    # dataset
    try:
        dataset_info(cfg.dataset.name)
    except KeyError as exc:
        raise ConfigError(f"dataset.name: {exc.args[0]}") from None
    known = COMMON_KEYS | set(source_options(cfg.dataset.name))
    extra = sorted(set(cfg.dataset) - known)
    if extra:
        raise ConfigError(
            f"dataset.{extra[0]} is not an option of {cfg.dataset.name}; valid: "
            f"{', '.join(sorted(known))}"
        )
    _choice("dataset.loader", cfg.dataset.loader, LOADERS)
    _non_negative("dataset.workers", cfg.dataset.workers)
    if cfg.dataset.augment.crop_padding < 0:
        raise ConfigError("dataset.augment.crop_padding must be >= 0")
    # arch and norm
    _choice("arch.name", cfg.arch.name, list(ARCHS))
    bad = sorted(set(arch_kwargs(cfg)) - set(arch_options(cfg.arch.name)) - {"zero_init_residual"})
    if bad:
        raise ConfigError(
            f"arch.{bad[0]} is not an option of {cfg.arch.name}; valid: "
            f"{', '.join(arch_options(cfg.arch.name))}, zero_init_residual"
        )
    if cfg.arch.width_mult <= 0:
        raise ConfigError(f"arch.width_mult={cfg.arch.width_mult} must be > 0")
    _choice("norm.name", cfg.norm.name, list(NORMS))
    try:
        spec = get_norm(cfg.norm.name, **norm_options(cfg))
        spec.conv_layer(4, 4, 3)
        spec.norm_layer(4)
    except TypeError as exc:
        raise ConfigError(f"norm: {exc}") from None
    except ValueError as exc:  # out-of-range layer options, e.g. stat_fraction
        raise ConfigError(f"norm.{exc!s}") from None
    # schedule, optimizer, mixup
    Schedule(cfg.schedule, cfg.epochs)
    _choice("optim.name", cfg.optim.name, ["sgd"])
    if cfg.optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={cfg.optim.weight_decay} must be >= 0")
    if cfg.optim.no_decay_max_rank < -1:
        raise ConfigError(f"optim.no_decay_max_rank={cfg.optim.no_decay_max_rank} must be >= -1")
    Mixup(cfg.mixup, seed=0)
    # train
    t = cfg.train
    _positive_int("train.batch_size", t.batch_size)
    _positive_int("train.eval_batch_size", t.eval_batch_size)
    _positive_int("train.devices", t.devices, allow_none=True)
    _positive_int("train.max_train_batches", t.max_train_batches, allow_none=True)
    _positive_int("train.max_eval_batches", t.max_eval_batches, allow_none=True)
    _positive_int("train.threads", t.threads, allow_none=True)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.channels_last", t.channels_last, AUTO_BOOL)
    _choice("train.progress", t.progress, AUTO_BOOL)
    if devices_here:
        resolve_device(t.device)
    elif t.device != "auto":
        _device_name(t.device)
    _choice("wandb.mode", cfg.wandb.mode, MODES)


def virtual_devices(cfg: DictConfig, world_size: int) -> int:
    """Devices each of ``world_size`` processes runs in turn (``train.devices / world_size``)."""
    devices = cfg.train.devices or world_size
    if devices % world_size:
        raise ConfigError(
            f"train.devices={devices} does not split over {world_size} processes; "
            f"use a multiple of {world_size} or torchrun --nproc_per_node dividing {devices}"
        )
    return devices // world_size
