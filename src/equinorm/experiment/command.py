"""A command line, checked before Hydra runs it: every job composed and checked, one line for the
first that fails, and no file written (Hydra reports composition errors in several lines after
creating its output folders; a bad value found by a job would cost a queued GPU job).

The arguments are read as Hydra's command line defines them (its documented flags: ``-m``,
``--cfg``, ``--info``, ...; overrides are the positional arguments); informational flags and other
config directories are left to Hydra.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from equinorm import experiment
from equinorm.errors import ConfigError, one_line
from equinorm.experiment import identity

INFORMATIONAL = ("help", "hydra_help", "version", "cfg", "info", "shell_completion")
ANNOUNCE = 20  # sweeps of this many jobs or more say that they are being checked
# what only a sweep (-m) reads: how its jobs are drawn (sweeper) and where they run (launcher)
MULTIRUN_ONLY = ("hparams_search=", "hydra/sweeper", "hydra.sweeper.")
MULTIRUN_ONLY += ("hydra/launcher", "hydra.launcher.")


def parse(argv: list[str], intermixed: bool = False) -> argparse.Namespace:
    """Hydra's command line (``python app.py --help`` lists it): flags and overrides; SystemExit,
    silently (Hydra prints its own usage error), where Hydra's parser would fail.
    ``intermixed``: overrides before and after flags too, which Hydra's parser refuses."""
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
    with contextlib.redirect_stderr(io.StringIO()):
        return p.parse_intermixed_args(argv) if intermixed else p.parse_args(argv)


def describe(exc: BaseException) -> str:
    """One line for a composition or validation error."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, choice = str(exc.missing_cfg_file).rpartition("/")
        if group in experiment.CHOICE_GROUPS or group.startswith("hydra/"):
            valid = exc.options or experiment.options(group)  # Hydra's: a user's dirs' too
            line = f"{group}={choice} is not one of {', '.join(valid)}"
            kind = group.removeprefix("hydra/")
            if kind in ("launcher", "sweeper"):  # Hydra's other plugins are packages
                line += f" (a plugin of Hydra's? pip install hydra-{choice}-{kind})"
            return line
    lexer = re.match(r"LexerNoViableAltException: ([^=\s]+)=([^\n]*)", str(exc))
    if lexer:  # e.g. a non-ASCII letter, unquoted
        key, value = lexer.groups()
        fix = f"quote it: '{key}=\"{value}\"'"
        if value.startswith("~"):  # zsh leaves it after '=', and Hydra does not expand it
            fix = f"write the path: {key}={os.path.expanduser(value)}"
        return (
            f"{key}={value}: Hydra reads unquoted values as ASCII letters, digits and "
            f"_-+./:@*; {fix}"
        )
    swept = re.match(
        r"(Ambiguous value for argument|Sweep parameters) '(([^=']+)=([^']*))'", str(exc)
    )
    if swept:  # Hydra's first line named neither -m nor the list syntax
        kind, arg, key, value = swept.groups()
        line = f"{arg} is a sweep: add -m (python -m equinorm.train -m ...)"
        listed = kind.startswith("Ambiguous") and key.lstrip("+~") not in experiment.CHOICE_GROUPS
        return line + (f"; a list is written {key}=[{value}]" if listed else "")
    added = re.match(
        r"Multiple values for ([\w/]+)\. To override a value use 'override \1: (.+)'", str(exc)
    )
    if added:  # +experiment=X: Hydra's answer is the defaults list's syntax
        group, value = added.groups()
        return f"+{group}={value}: {group} is a group of this config already: {group}={value}"
    if "Can only enumerate CHOICE and RANGE sweeps" in str(exc):  # interval() under a grid
        return (
            "an interval() is searched, not listed: the grid sweeper runs a,b,c / choice() / "
            "range(); search it with a preset (hparams_search=optuna_lr) or hydra/sweeper=optuna "
            "hydra.sweeper.direction=maximize"
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = "; ".join(filter(None, [exc.context, exc.problem]))
        return f"{mark.name}, line {mark.line + 1}: not valid YAML ({what})"
    text = f"{exc} {exc.__cause__}"
    if re.search(r"Could not override '\w+@experiment\.", text):  # included @_here_ under it
        return experiment.unpackaged()
    own = re.search(
        r"In '(\w+)/([\w.-]+)'.*Key '(\w+)' not in '(\w+)'\s+full_key: ([\w.]+)", text, re.S
    )
    if own and own.group(1) in experiment.GROUPS:  # a typo in a group's option file of a user's
        option_group, name, _, kind, full = own.groups()
        return (
            f"{option_group}={name} sets {full}, not a key of this config's {option_group} "
            f"({kind}){_elsewhere(full)}"
        )
    if own and own.group(1) == "experiment":
        _, name, _, kind, full = own.groups()
        group, _, key = full.partition(".")
        if group == "experiment":  # no package line: its keys land under 'experiment.'
            return experiment.unpackaged(name)
        # another option of the group has it (experiment=digits_demo schedule=cosine), else a typo
        if group in experiment.GROUPS and _having(group, key):
            return (
                f"experiment={name} sets {full}, a key this config's {group} ({kind}) does "
                f"not have: another {group} than the experiment's needs an experiment file of your "
                "own (docs/runs.md, 'Your own experiments')"
            )
        return f"experiment={name} sets {full}, not a key of this config{_elsewhere(full)}"
    absent = re.search(r"override '(\w+)\.([\w.]+)'.*Key '\w+' not in '(\w+)'", text, re.S)
    if absent and absent.group(1) in experiment.GROUPS:  # e.g. mixup.alpha under mixup=none
        return _not_a_key(*absent.groups())
    unknown = re.search(
        r"override '([\w.]+)'.*Key '\w+' (not in '\w+'|is not in struct)", text, re.S
    )
    if unknown:  # e.g. train.batchsize=3, lr=0.1
        return f"{unknown.group(1)} is not a key of this config{_elsewhere(unknown.group(1))}"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        text = one_line(exc)  # oc.env's KeyError: "Environment variable 'X' not found"
        text = re.sub(r'^\w+ raised while resolving interpolation: "?(.*?)"?$', r"\1", text)
        typed = _typed(exc) if key and key.startswith("hydra.") else None
        if typed and typed not in text:  # Hydra's copy of the command line, or a dir of it
            key = typed
        return f"{key}: {text}" if key and key not in text else text
    text = one_line(exc).rstrip(".").removeprefix("Error merging override ")
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and one_line(cause) not in text:
        text = f"{text}: {one_line(cause)}"
    return text


def _typed(exc: OmegaConfBaseException) -> str | None:
    """What the user typed behind an interpolation error in Hydra's node: the override as typed
    (``hydra.overrides.task[1]`` holds ``schedule.lr=${oops}``), else the keys the node
    interpolates (``hydra.sweep.dir``: ``${results_dir}/sweeps/...``)."""
    value = str(getattr(exc, "child_node", None) or "")
    if str(exc.full_key).startswith("hydra.overrides."):
        return value or None
    return ", ".join(re.findall(r"\$\{([A-Za-z_][\w.]*)\}", value)) or None


def _not_a_key(group: str, key: str, kind: str) -> str:
    """One line for ``<group>.<key>=...`` that this config's option of ``group`` (its schema:
    ``kind``) does not have: which options have it."""
    named = [f"{group}={option}" for option in _having(group, key)]
    where = (
        ", ".join([*named[:-2], " and ".join(named[-2:])]) or f"no {group} option{_elsewhere(key)}"
    )
    return f"{group}.{key} is not a key of this config's {group} ({kind}); it is a key of {where}"


def _having(group: str, key: str) -> list[str]:
    """The options of ``group`` that have ``key`` (below the group)."""
    unset = object()
    having = []
    for option in experiment.options(group):
        with contextlib.suppress(HydraException, OmegaConfBaseException):
            node = experiment.compose_raw([f"{group}={option}"])[group]
            if OmegaConf.select(node, key, default=unset) is not unset:
                having.append(option)
    return having


def _elsewhere(key: str) -> str:
    """`` (schedule.lr?)``: the keys of the default config that end as ``key`` does (``optim.lr``
    typed for ``schedule.lr``), else those spelled nearly as it is (``train.batchsize``); else
    `` (a typo?)``."""
    cfg = OmegaConf.to_container(experiment.compose_raw([]), resolve=False)
    cfg.pop("hydra", None)
    keys = list(identity.flatten(cfg))
    leaf = key.rsplit(".", 1)[-1]
    found = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != key]
    found = found or difflib.get_close_matches(key, keys, n=2, cutoff=0.8)
    groups = [g for g in experiment.GROUPS if g in cfg]  # nrom=bn: two letters swapped
    found = found or difflib.get_close_matches(key, groups, n=1, cutoff=0.7)
    return f" ({' or '.join(found)}?)" if found else " (a typo?)"


def composed(jobs: list[list[str]]) -> Iterator[tuple[list[str], DictConfig]]:
    """Each job with its composed config (Hydra node included). Jobs that differ only in their
    ``seed=`` (a sweep's seeds: most of its jobs) are composed once and given their seed, which
    changes no other key: a 90-job sweep is checked in the time of 9."""
    done: dict[tuple[str, ...], DictConfig] = {}
    for job in jobs:
        seeds = [o for o in job if o.startswith("seed=")]
        rest = tuple(o for o in job if not o.startswith("seed="))
        if len(seeds) != 1 or rest not in done:
            cfg = experiment.compose(job, hydra=True)
            done.setdefault(rest, cfg)
            yield job, cfg
            continue
        cfg = copy.deepcopy(done[rest])
        with open_dict(cfg):
            cfg.seed = yaml.safe_load(seeds[0].split("=", 1)[1])
        experiment.locate(cfg, cfg.hydra.runtime.choices)
        yield job, cfg


SHELLS = ("bash", "fish", "zsh")  # Hydra's completion plugins
SUBCOMMANDS = ("install", "uninstall", "query")  # of --shell-completion


def completion(given: list[str]) -> str | None:
    """Hydra's ``--shell-completion``, where its traceback would answer: no subcommand, a shell
    it has no plugin for; or ``python -m``, whose completion Hydra installs for ``python
    <script>.py`` and so completes nothing."""
    how = 'eval "$(equinorm-train -sc install=bash)"'
    if Path(sys.argv[0]).name == "__main__.py":
        return f"tab completion is the console script's: {how} (then equinorm-train <TAB>)"
    asked = [o.partition("=")[::2] for o in given if o.partition("=")[0] in SUBCOMMANDS]
    if len(asked) != 1:
        return f"--shell-completion (-sc) takes one of install=, uninstall= or query=: {how}"
    ((sub, shell),) = asked
    if shell not in SHELLS:
        return f"-sc {sub}={shell}: Hydra completes {', '.join(SHELLS)} ({how})"
    return None


def preflight(argv: list[str], check: Callable[[DictConfig], None]) -> str | None:
    """The one-line error of the first job of ``argv`` that fails ``check``, else None."""
    try:
        args = parse(argv)
    except SystemExit:
        try:
            parse(argv, intermixed=True)
        except SystemExit:
            return None  # let Hydra report its own usage errors
        return (  # e.g. experiment=x -m seed=0,1: argparse reads one block of overrides
            "Hydra reads the KEY=VALUE arguments as one block: put -m and the other flags "
            "before them (python -m equinorm.train -m KEY=VALUE ...)"
        )
    given = list(args.overrides)
    if args.experimental_rerun:  # Hydra: a traceback, whatever the file
        return (
            "--experimental-rerun: the suite keeps no .hydra/config.pickle to rerun "
            "(hydra.output_subdir=null); run a run's command again (its provenance.json records "
            "the overrides): a finished run is skipped, an unfinished one resumes"
        )
    if args.config_name not in (None, "train"):  # Hydra: "Cannot find primary config" in 8 lines
        return (
            f"--config-name {args.config_name}: the trainer has one config, train "
            f"(conf/train.yaml); an experiment is chosen with experiment={args.config_name}"
        )
    if args.config_dir:  # --config-dir DIR is one more search-path entry, checked the same way
        if not Path(args.config_dir).is_dir():  # Hydra: a warning, then its error in 3 lines
            return (
                f"--config-dir {args.config_dir}: no such directory (the folder that holds your "
                "experiment/<name>.yaml: docs/runs.md, 'Your own experiments')"
            )
        if any(o.split("=", 1)[0] == "hydra.searchpath" for o in given):
            return None  # both: Hydra merges them itself
        given.append(f"hydra.searchpath=[file://{Path(args.config_dir).absolute()}]")
    shown = [flag for flag in ("cfg", "info", "shell_completion") if getattr(args, flag)]
    if args.multirun and shown:  # Hydra raises a ValueError, traceback and all
        return (
            f"-m and --{shown[0].replace('_', '-')} do not go together: it shows one job; "
            "drop -m and give one value per key"
        )
    modes = ["-r"] * args.run + ["-m"] * args.multirun + [f"--{f.replace('_', '-')}" for f in shown]
    if len(modes) > 1:  # Hydra: "Only one of --run, --multirun, ..." in a ValueError's traceback
        return (
            f"{modes[0]} and {modes[1]} do not go together: one of -r (one job, the default), "
            "-m, --cfg, --info, --shell-completion"
        )
    if args.resolve and not (args.cfg or args.help):  # Hydra: a ValueError's traceback
        return "--resolve resolves the config --cfg shows: add --cfg job (or --cfg all)"
    if args.package and not (args.cfg or args.help):  # Hydra ignores it and runs the job
        return f"--package {args.package} picks what --cfg shows: add --cfg job"
    if args.shell_completion:
        return completion(given)
    if any(getattr(args, flag) for flag in INFORMATIONAL):
        return None
    primary = contextlib.nullcontext()  # where train.yaml is read: conf/, or --config-path's
    if args.config_path:
        path = Path(args.config_path)
        if not path.is_absolute() or not (path / "train.yaml").is_file():  # Hydra: 5-8 lines
            return (
                f"--config-path {args.config_path}: not a folder holding train.yaml (Hydra reads "
                "a relative one as a package beside the trainer's code); to add configs to the "
                "suite's: --config-dir DIR (docs/runs.md, 'Your own experiments')"
            )
        primary = initialize_config_dir(config_dir=str(path), version_base="1.3")
    multirun = args.multirun or "hydra.mode=MULTIRUN" in given  # Hydra's two spellings of -m
    placed = [o for o in given if o.lstrip("+~").startswith("hydra.run.dir")]
    if placed:  # Hydra's habit (lightning-hydra-template's output dir): an empty folder here
        return (
            f"{placed[0]}: runs are not written there; they go to <results_dir>/runs/<name>/..., "
            "so choose the place with results_dir=DIR"
        )
    if multirun and "TORCHELASTIC_RUN_ID" in os.environ:  # every process would run the sweep,
        return (  # and a second job's process group hung in its first barrier (torch 2.15)
            "-m under torchrun: each of its processes would run the whole sweep; start one "
            "torchrun per job (scripts/reproduce.py --nproc N does), or let the launcher start "
            "each job's processes: -m hydra/launcher=submitit_local hydra.launcher.tasks_per_node=N"
        )
    sweep_only = [o for o in given if o.lstrip("+").startswith(MULTIRUN_ONLY)]
    sweep_only = [o for o in sweep_only if o != "hparams_search=grid"]
    if sweep_only and not multirun:  # Hydra would quietly train the one run, here
        return f"{sweep_only[0]} applies to sweeps: add -m (python -m equinorm.train -m ...)"
    with primary:
        return _checked(given, multirun, check)


def _checked(given: list[str], multirun: bool, check: Callable[[DictConfig], None]) -> str | None:
    """The preflight's composing part: every job of the command line, checked."""
    try:
        overrides = experiment.jobs(given, multirun)
        if len(overrides) >= ANNOUNCE:  # composing takes a while: say what is going on
            print(f"equinorm: checking {len(overrides)} jobs before launching any", file=sys.stderr)
        sweeper = None  # one for every job; none when a sweep has no job (seed='range(0,0)')
        for number, (job, cfg) in enumerate(composed(overrides)):
            if number == 0 and (unread := _shadowed(experiment.user_sources(cfg))):
                return unread  # the jobs' config dirs: the same for every job
            sweeper = cfg.hydra.sweeper
            if multirun and cfg.hydra.job.chdir:  # relative paths would be read from its folder
                return (
                    "hydra.job.chdir=true: each job of a sweep would run in its own folder under "
                    "the sweep's, where relative paths (results_dir, dataset.root) are not the "
                    "ones given; runs are placed by results_dir=DIR: drop hydra.job.chdir"
                )
            try:
                check(cfg)
            except ConfigError as exc:
                if not multirun:
                    raise
                raise ConfigError(f"job #{number} ({' '.join(job)}): {exc}") from None
    except (*experiment.COMPOSE_ERRORS, ConfigError) as exc:
        return _unread(given, exc) or describe(exc) + _renamed(given)
    return (_direction(sweeper) or _storage(sweeper)) if multirun else None


def _unread(given: list[str], exc: BaseException) -> str | None:
    """The line for an override Hydra's parser cannot read, naming it: Hydra's own message names
    a token alone ("mismatched input '=' expecting <EOF>" for results_dir=/data/lr=0.1)."""
    if not isinstance(exc, OverrideParseException) or "LexerNoViableAlt" in str(exc):
        return None  # the lexer's names the override (describe: non-ASCII, ~)
    parser = OverridesParser.create()
    for override in given:
        try:
            parser.parse_override(override)
        except HydraException as bad:
            key, _, value = override.partition("=")
            quoted = f"; a value holding '=' is quoted: '{key}=\"{value}\"'" if "=" in value else ""
            return f"{override}: Hydra cannot read it ({str(bad).splitlines()[0]}){quoted}"
    return None


def _shadowed(sources: list[str]) -> str | None:
    """The line for a file of a user's config dir (``sources``: search-path entries) that has
    the path of one of the suite's own and other contents: Hydra finds the suite's first (its
    dir leads the search path), so an edited copy of ours would be silently never read."""
    for root in experiment.config_dirs(sources):
        for ours in sorted(experiment.CONF_DIR.rglob("*.yaml")):
            path = ours.relative_to(experiment.CONF_DIR)
            theirs = root / path
            if not theirs.is_file() or theirs.read_bytes() == ours.read_bytes():
                continue
            if path.parent == Path("."):  # train.yaml: the base config
                fix = "set its keys in an experiment of yours instead"
            else:
                group, name = path.parent.as_posix(), path.stem
                named = f", name: {name}_mine" if group == "experiment" else ""
                fix = (
                    f"give yours its own name ({group}={name}_mine{named}); it may extend ours: "
                    f"defaults: [/{group}/{name}@_here_, _self_]"
                )
            return (
                f"{theirs} is never read: the suite's own conf/{path.as_posix()} comes first in "
                f"Hydra's search path; {fix}"
            )
    return None


def _direction(sweeper: DictConfig | None) -> str | None:
    """The line for a searching sweeper told to minimize: every job returns its accuracy
    (:func:`equinorm.run.record.objective`), and Optuna's default direction is minimize -- its
    study would find the worst learning rate and call it best."""
    direction = None if sweeper is None else sweeper.get("direction")  # Optuna's: an enum,
    if direction is None:  # a string, or a list (multi-objective)
        return None
    directions = direction if isinstance(direction, ListConfig) else [direction]
    names = [getattr(d, "name", str(d)) for d in directions]
    if names == ["maximize"]:
        return None
    return (
        f"hydra.sweeper.direction={','.join(names)}: each job returns one number, its accuracy "
        "(final validation accuracy, else test), which a search maximizes: add "
        "hydra.sweeper.direction=maximize (hparams_search=optuna_lr sets it)"
    )


def _storage(sweeper: DictConfig | None) -> str | None:
    """The line for a study storage that cannot hold the study (Optuna's ``storage``): not a
    database URL, or a SQLite file whose folder is not there or not writable -- SQLAlchemy's
    traceback, once the sweep had begun."""
    storage = None if sweeper is None else sweeper.get("storage")
    if not isinstance(storage, str) or not storage:
        return None
    if "://" not in storage:
        return (
            f"hydra.sweeper.storage={storage}: not a database URL; a SQLite file is "
            f"sqlite:///{storage} (relative to here) or sqlite:////abs/path/study.db"
        )
    if not storage.startswith("sqlite:///"):  # a database server: its own errors
        return None
    folder = Path(storage.removeprefix("sqlite:///")).parent
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        return (
            f"hydra.sweeper.storage={storage}: its folder {folder} is not there or not writable "
            "(the study's SQLite file goes in it)"
        )
    return None


def _renamed(given: list[str]) -> str:
    """`` (arch=wrn chooses the arch and its keys; ...)``, where a failing command line set
    ``arch.name=wrn``: that swaps the chosen option's network and keeps the option's keys."""
    for override in given:
        key, _, value = override.partition("=")
        group = key.removesuffix(".name")
        named = key.endswith(".name") and group in experiment.GROUPS
        if named and value in experiment.options(group):
            return (
                f" ({group}={value} chooses the {group} and its keys; {key}= keeps those of the "
                "one chosen)"
            )
    return ""


__all__ = ["describe", "parse", "preflight"]
