"""Check what ``python -m equinorm.train ...`` is about to run before Hydra writes anything.

Hydra creates a run's directory (and a sweep's ``multirun.yaml``) before the task starts, and
reports a composition error in several lines. This composes every job of the command line the
way Hydra will -- the single run, or each job of a multirun expanded by Hydra's own
BasicSweeper -- and checks it (:func:`equinorm.train.validate.check_config`), so that a bad key,
type or value is one line naming the key, the value and what is valid, with exit code 2, and no
file written. Hydra's informational flags (--help, --cfg, --info, ...) go straight to Hydra.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from equinorm.errors import ConfigError
from equinorm.paths import config_dir
from equinorm.train.slurm_check import check_launcher
from equinorm.train.sweep import expand
from equinorm.train.validate import check_config, virtual_devices

GROUPS = ("dataset", "arch", "norm", "schedule", "optim", "mixup", "experiment", "debug")
INFORMATIONAL = ("help", "hydra_help", "version", "cfg", "info", "shell_completion")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _options(group: str) -> list[str]:
    """A group's choices, without the files of shared keys (``_common``)."""
    loader = GlobalHydra.instance().config_loader()
    return [o for o in sorted(loader.get_group_options(group)) if not o.startswith("_")]


def describe(exc: BaseException) -> str:
    """One line for a composition or validation error."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, choice = str(exc.missing_cfg_file).rpartition("/")
        if group in GROUPS:
            return f"{group}={choice} is not one of {', '.join(_options(group))}"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        text = _first_line(exc)
        return f"{key}: {text}" if key and key not in text else text
    text = _first_line(exc).rstrip(".")
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if text.startswith("Error merging override "):
        text = text.removeprefix("Error merging override ")
    if cause is not None and _first_line(cause) not in text:
        text = f"{text}: {_first_line(cause)}"
    return text


def _check_choices(overrides: list[str]) -> None:
    parser = OverridesParser.create()
    for o in parser.parse_overrides(overrides):
        key = o.get_key_element()
        values = [o.value()] if not o.is_sweep_override() else list(o.sweep_string_iterator())
        for value in values:
            if key in GROUPS and isinstance(value, str) and value.startswith("_"):
                raise ConfigError(
                    f"{key}={value} holds the keys every {key} shares, it is not a choice; "
                    f"valid: {', '.join(_options(key))}"
                )


def _remote(cfg: DictConfig) -> bool:
    """Jobs that run on another machine (SLURM): its devices are not this one's."""
    target = OmegaConf.select(cfg, "hydra.launcher._target_", default="") or ""
    return "Slurm" in target


def check_writable(results_dir: str) -> None:
    """``results_dir`` (or its first existing parent) is a directory this process may write."""
    path = Path(results_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"results_dir={results_dir}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"results_dir={results_dir}: cannot write to {existing} (read-only or not yours); "
            "choose another results_dir=..."
        )


def check_job(cfg: DictConfig) -> None:
    """Everything :func:`equinorm.train.run.run` checks before it touches a file."""
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(plain, resolve=True, throw_on_missing=True)  # interpolations, ???
    check_config(cfg, devices_here=not _remote(cfg))
    if _remote(cfg):
        check_launcher(cfg.hydra.launcher)  # the request fits the partition (sinfo)
    check_writable(cfg.results_dir)
    virtual_devices(cfg, int(os.environ.get("WORLD_SIZE", "1")))


def jobs(config_name: str, overrides: list[str], multirun: bool):
    """(overrides, composed config) of each job the command line starts."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [line for line, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override()]
    base = compose(config_name, overrides=fixed, return_hydra_config=True)
    if not multirun:
        yield overrides, base
        return
    for job in expand(OmegaConf.select(base, "hydra.sweeper.params"), overrides):
        yield job, compose(config_name, overrides=job, return_hydra_config=True)


def preflight(argv: list[str]) -> str | None:
    """The one-line error of the first job that would fail its checks, else None."""
    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:
        return None  # let Hydra report its own usage errors
    if any(getattr(args, flag, None) for flag in INFORMATIONAL):
        return None
    if args.config_path or args.config_dir:
        return None  # another config tree: Hydra alone
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            _check_choices(args.overrides)
            composed = jobs(args.config_name or "train", args.overrides, args.multirun)
            for number, (job, cfg) in enumerate(composed):
                try:
                    check_job(cfg)
                except ConfigError as exc:
                    if not args.multirun:
                        raise
                    raise ConfigError(f"job #{number} ({' '.join(job)}): {exc}") from None
        except (HydraException, OmegaConfBaseException, ConfigError) as exc:
            return describe(exc)
    return None
