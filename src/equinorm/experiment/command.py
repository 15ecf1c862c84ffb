"""A command line, checked before Hydra runs it: every job composed and checked, one line for the
first that fails, and no file written (Hydra reports composition errors in several lines after
creating its output folders; a bad value found by a job would cost a queued GPU job).

The arguments are read as Hydra's command line defines them (its documented flags: ``-m``,
``--cfg``, ``--info``, ...; overrides are the positional arguments); informational flags and other
config directories are left to Hydra.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from equinorm import experiment
from equinorm.errors import ConfigError, one_line

INFORMATIONAL = ("help", "hydra_help", "version", "cfg", "info", "shell_completion")
CHOICE_GROUPS = (*experiment.GROUPS, "experiment", "debug")


def parse(argv: list[str]) -> argparse.Namespace:
    """Hydra's command line (``python app.py --help`` lists it): flags and overrides."""
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--help -h", "--hydra-help", "--version", "--resolve", "--run -r"):
        p.add_argument(*flag.split(), action="store_true")
    p.add_argument("--multirun", "-m", action="store_true")
    p.add_argument("--shell-completion", "-sc", action="store_true")
    p.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    p.add_argument("--info", "-i", nargs="?", const="all")
    for flag in ("--package -p", "--config-path -cp", "--config-name -cn", "--config-dir -cd"):
        p.add_argument(*flag.split())
    p.add_argument("--experimental-rerun")
    p.add_argument("overrides", nargs="*")
    return p.parse_args(argv)


def describe(exc: BaseException) -> str:
    """One line for a composition or validation error."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, choice = str(exc.missing_cfg_file).rpartition("/")
        if group in CHOICE_GROUPS:
            return f"{group}={choice} is not one of {', '.join(experiment.options(group))}"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        text = one_line(exc)
        return f"{key}: {text}" if key and key not in text else text
    text = one_line(exc).rstrip(".").removeprefix("Error merging override ")
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and one_line(cause) not in text:
        text = f"{text}: {one_line(cause)}"
    return text


def preflight(argv: list[str], check: Callable[[DictConfig], None]) -> str | None:
    """The one-line error of the first job of ``argv`` that fails ``check``, else None."""
    try:
        args = parse(argv)
    except SystemExit:
        return None  # let Hydra report its own usage errors
    if any(getattr(args, flag) for flag in INFORMATIONAL) or args.config_path or args.config_dir:
        return None
    try:
        overrides = experiment.jobs(args.overrides, args.multirun)
        for number, job in enumerate(overrides):
            try:
                check(experiment.compose(job, hydra=True))
            except ConfigError as exc:
                if not args.multirun:
                    raise
                raise ConfigError(f"job #{number} ({' '.join(job)}): {exc}") from None
    except (HydraException, OmegaConfBaseException, ConfigError) as exc:
        return describe(exc)
    return None


__all__ = ["describe", "parse", "preflight"]
