"""What a job is: the configs in ``conf/``, composed, expanded into jobs, and where each job's run
lives -- the only code that calls Hydra's compose API and override parser.

    compose(["experiment=cifar10_wrn_short", "norm=bn"])   # the config the trainer would run
    jobs(["experiment=digits_demo", "schedule.lr=0.1,0.05"])   # a -m command line's jobs
    locate(cfg, choices)                                  # its run directory and variant

A job's sweep is its experiment's ``hydra.sweeper.params`` (paper section 6.5: norms x seeds)
with the command line's sweeps over them, expanded as Hydra's basic sweeper expands them: every
combination, in the same order. A searching sweeper (Optuna, Nevergrad, ...) draws its own jobs:
it is given its params without the experiment's grid, and a command line for it is checked at
each value it may draw that can be listed (the fixed job, every choice, an interval's ends).
The run directory follows from the composed config alone (:mod:`equinorm.experiment.identity`):
two commands that compute the same thing share one run.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from submitit import JobEnvironment
from yaml import YAMLError

from equinorm.errors import ConfigError
from equinorm.experiment import identity, schema

GROUPS = ("dataset", "arch", "norm", "schedule", "optim", "mixup")
OPTIONAL_GROUPS = ("experiment", "debug")  # train.yaml's defaults list leaves them null
CHOICE_GROUPS = (*GROUPS, *OPTIONAL_GROUPS, "hparams_search")  # ours (Hydra's: hydra/<group>)
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, YAMLError)  # a bad command line or file
# the sweepers (class names) that run every combination of their params: equinorm's
# (hydra/sweeper=equinorm) and Hydra's basic one (hydra/sweeper=basic)
GRID_SWEEPERS = ("SkipFinishedSweeper", "BasicSweeper")


def _conf_dir() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "conf"  # a wheel carries them here
    checkout = Path(__file__).resolve().parents[3] / "conf"
    for path in (packaged, checkout):
        if path.is_dir():
            return path
    raise FileNotFoundError(f"equinorm's configs are in neither {packaged} nor {checkout}")


CONF_DIR = _conf_dir()


def register() -> None:
    """The key types (:mod:`equinorm.experiment.schema`) in Hydra's ConfigStore (idempotent)."""
    schema.register()


def config_dirs(sources: Sequence[str]) -> list[Path]:
    """The folders of the search-path entries ``sources`` that are ``file://`` ones."""
    return [Path(s[len("file://") :]) for s in sources if s.startswith("file://")]


def options(group: str, sources: Sequence[str] = ()) -> list[str]:
    """The choices of a config group (``norm`` -> bn, equi, ...), with those of the config dirs
    ``sources`` (search-path entries: ``file://`` ones are read)."""
    dirs = [CONF_DIR, *config_dirs(sources)]
    return sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")})


@contextlib.contextmanager
def _hydra():
    """Hydra's global state for composing: the running app's, else one on CONF_DIR."""
    register()
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_raw(overrides: Sequence[str]) -> DictConfig:
    """The composed config with its Hydra node, as Hydra composes it (no run directory)."""
    for override in overrides:
        _not_a_flag(override)
        group, _, value = override.lstrip("+").partition("=")
        if not group and value:  # "=3": Hydra's ValueError and traceback where it is a number
            raise ConfigError(f"{override}: an override is key=value, and this one names no key")
        if "=" not in override and not override.startswith("~"):  # "Error parsing override"
            raise ConfigError(f"{override}: an override is key=value (~key drops a key)")
        if value == "null" and group in CHOICE_GROUPS:  # Hydra's ValueError and traceback
            raise ConfigError(_null_choice(override, group))
        if (group in CHOICE_GROUPS or "/" in group) and not _a_name(override):  # norm=3: the same
            names = f", one of {', '.join(options(group))}" if group in CHOICE_GROUPS else ""
            raise ConfigError(f"{override}: {group} takes an option's name{names}")
        removed = group.removeprefix("~")  # ~norm: "Key 'norm' is not in struct", later
        if removed != group and removed in GROUPS:
            raise ConfigError(_null_choice(override, removed))
        if value.startswith("[") and group in CHOICE_GROUPS:  # Hydra merges them: one config
            each = value.strip("[]")
            raise ConfigError(
                f"{override} would merge these options into one config; to run each: -m "
                f"{group}={each}"
            )
    with _hydra():
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    _not_set(cfg)
    _named(cfg)
    return cfg


def _named(cfg: DictConfig) -> None:
    """Each group's option names what it builds: a user's option file without ``name`` (nor one
    of ours under it) was "arch.name: Key 'name' is not in struct"."""
    for group in GROUPS:
        if OmegaConf.select(cfg, f"{group}.name", default=None) is None:
            choice = cfg.hydra.runtime.choices[group]
            ours = _reference(()).hydra.runtime.choices[group]
            raise ConfigError(
                f"{group}={choice} sets no {group}.name: an option of yours extends one of ours "
                f"(defaults: [{ours}, _self_] first in its file) or names what it builds "
                f"(name: {ours})"
            )


def _not_set(cfg: DictConfig) -> None:
    """``run_dir`` and ``variant`` are the trainer's (:func:`locate`): a value typed or set in a
    file was replaced without a word, and the run went elsewhere than the user asked."""
    why = {
        "run_dir": "a run's directory is named by the trainer (<results_dir>/runs/<name>/<dataset>"
        "-<arch>-<norm>/[<variant>/]seed=<k>); runs go where results_dir= says, under name=",
        "variant": "a run's variant is named by the trainer: the keys its config sets otherwise "
        "than its experiment (set those keys; schedule.lr=0.05 runs in .../schedule.lr=0.05/)",
    }
    for key, text in why.items():
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if value is not None:
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            raise ConfigError(f"{key}={shown}: {text}")


def _not_a_flag(override: str) -> None:
    """An option among a script's overrides (``reproduce.py all -- --bogus``) was Hydra's lexer
    error, 'LexerNoViableAltException: --bogus'."""
    if override.startswith("-"):
        raise ConfigError(
            f"{override} is not an override (key=value): a command's options go before its "
            "overrides"
        )


def _a_name(override: str) -> bool:
    """Whether the value of a group override can name an option: a string (or a sweep, a list
    or null, each checked where it is composed), not a number or a boolean (``norm=3``), which
    Hydra's defaults list refuses with a ValueError."""
    try:
        parsed = OverridesParser.create().parse_override(override)
    except COMPOSE_ERRORS:  # said, in one line, where Hydra composes it
        return True
    return parsed.is_sweep_override() or isinstance(parsed.value(), str | list | type(None))


def unpackaged(name: str | None = None) -> str:
    """One line for an experiment file without ``# @package _global_`` (``name``: if known)."""
    which = f"experiment={name}: its file" if name else "the experiment's file"
    return (
        f"{which} lacks the first line '# @package _global_', so its keys land under "
        "'experiment.' and set nothing (docs/runs.md, 'Your own experiments')"
    )


def _null_choice(override: str, group: str) -> str:
    if group in OPTIONAL_GROUPS:
        return f"{override}: Hydra drops an optional group with ~{group} (or leave {group}= out)"
    return f"{override}: a {group} must be chosen, one of {', '.join(options(group))}"


def compose(overrides: Sequence[str] = (), *, hydra: bool = False) -> DictConfig:
    """The config ``python -m equinorm.train <overrides>`` runs, with its ``run_dir``; with
    ``hydra`` its Hydra node too (the launcher, the sweep's params, the group choices)."""
    cfg = compose_raw(overrides)
    locate(cfg, cfg.hydra.runtime.choices)
    if not hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


@functools.lru_cache(maxsize=256)
def _reference(overrides: tuple[str, ...]) -> DictConfig:
    return compose_raw(overrides)


def reference(cfg: DictConfig, choices) -> tuple[DictConfig, list[str]]:
    """The config a job is named against, and the group items of its variant.

    That is the job's experiment composed with, per config group, the option of the job's
    ``name`` that the experiment itself would use: its own choice where that has the job's name
    (``equi_quarter`` stands for ``equi`` in cifar10_wrn_quarter), else the option of that name.
    A choice of another name in an unnamed group (schedule, optim, mixup) is an item
    (``mixup=manifold``); dataset, arch and norm are named by the layout; ``debug`` by itself.
    """
    base = _experiment(cfg, choices.get("experiment"))
    _own_name(cfg, choices.get("experiment"))
    own = _reference(base)
    picks, items = list(base), []
    for group in GROUPS:
        mine, theirs = cfg[group].name, own[group].name
        if choices[group] == own.hydra.runtime.choices[group] or mine == theirs:
            continue
        named = mine in options(group, user_sources(cfg))
        picks.append(f"{group}={mine if named else choices[group]}")
        if group not in identity.LAYOUT_GROUPS:
            items.append(f"{group}={mine}")
    if choices.get("debug"):
        picks.append(f"debug={choices['debug']}")
        items.append(f"debug={choices['debug']}")
    return _reference(tuple(picks)), items


def _own_name(cfg: DictConfig, choice: str | None) -> None:
    """Refuse a job of experiment ``choice`` whose ``name`` is another experiment's (or that of
    the runs without one): its runs would be filed under ``runs/<name>/`` among that one's,
    named against a different config, and the report would pool them. A file that extends
    another experiment without a ``name`` of its own inherits the other's."""
    if not choice or cfg.name == choice:
        return
    if cfg.name == _reference(()).name:
        theirs = "the runs without an experiment"
    elif cfg.name in options("experiment", user_sources(cfg)):
        theirs = f"experiment={cfg.name}'s runs"
    else:
        return
    typed = any(override_key(o) == "name" for o in _hydra_value(cfg, "overrides.task") or [])
    way = f"'name: {choice}' in its file, or name=... on the command line"
    raise ConfigError(
        f"experiment={choice} is named {cfg.name}, so its runs would go among {theirs} "
        f"(runs/{cfg.name}/), named against another config, and be reported with them; give it "
        f"a name of its own ({'a name= that no experiment has' if typed else way})"
    )


def recorded_reference(
    name: str, names: dict[str, str], protocol: Sequence[str] = ()
) -> DictConfig | None:
    """:func:`reference` from what a run recorded rather than from its job: its experiment
    ``name``, its dataset, arch and norm ``names`` (each group whose name differs from the
    experiment's own option's takes the option of that name) and its protocol overrides
    (``debug=smoke``). None where conf/ cannot compose it (an experiment of the user's own, a norm
    of another package)."""
    if name not in options("experiment"):
        return None
    base = (f"experiment={name}", *protocol)
    try:
        own = _reference(base)
        picks = [(g, n) for g, n in names.items() if own[g].name != n]
        if any(n not in options(g) for g, n in picks):
            return None
        return _reference((*base, *(f"{g}={n}" for g, n in picks))) if picks else own
    except COMPOSE_ERRORS:
        return None


def _experiment(cfg: DictConfig, name: str | None) -> tuple[str, ...]:
    """The overrides that compose a job's experiment as it stands (none: the defaults), from
    the job's config dirs too (its experiment may live in a user's)."""
    base = [f"experiment={name}"] if name else []
    users = user_sources(cfg)
    if users:
        base.append(f"hydra.searchpath=[{','.join(users)}]")
    return tuple(base)


def user_sources(cfg: DictConfig) -> list[str]:
    """The config dirs a job composed from beyond the suite's own (``hydra.searchpath=[...]``,
    ``--config-dir``), as search-path entries: its Hydra node's, else the running job's."""
    sources = _hydra_value(cfg, "runtime.config_sources")
    return [
        f"{s.schema}://{s.path}"
        for s in sources or []
        if s.provider == "command-line" or str(s.provider).startswith("hydra.searchpath")
    ]


def world_size() -> int:
    """The processes this job runs in: torchrun's, a multi-task submitit job's, else 1."""
    if "WORLD_SIZE" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        return JobEnvironment().num_tasks  # SLURM's tasks or the local executor's
    return int(os.environ.get("WORLD_SIZE", 1))


def locate(cfg: DictConfig, choices, world: int | None = None) -> dict:
    """Set ``cfg.run_dir`` (``<results_dir>/runs/<name>/<dataset>-<arch>-<norm>/[<variant>/]
    seed=<k>``) and ``cfg.variant`` (its items, ``{key: value}``), and return the items; a key
    that this config does not have (a ``+`` addition) is a :class:`~equinorm.errors.ConfigError`
    naming it. ``world``: the processes the job will run in (default: this process's)."""
    ref, groups = reference(cfg, choices)
    items = identity.variant(cfg, ref, world_size=world or world_size())
    items = {**{g.split("=", 1)[0]: g.split("=", 1)[1] for g in groups}, **items}
    with open_dict(cfg):
        cfg.variant = items
        cfg.run_dir = str(identity.run_dir(cfg, items))
    return items


def job_choices(cfg: DictConfig):
    """The group choices of a composed job: its Hydra node's, else the running job's."""
    return _hydra_value(cfg, "runtime.choices")


def _hydra_value(cfg: DictConfig, key: str):
    """``hydra.<key>`` of a composed job: its Hydra node's, else the running job's (None)."""
    value = OmegaConf.select(cfg, f"hydra.{key}", default=None)
    if value is None and HydraConfig.initialized():
        value = OmegaConf.select(HydraConfig.get(), key, default=None)
    return value


def override_key(override: str) -> str:
    """The key (or group) a command-line override sets: ``+train.x=1`` -> ``train.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def _axes(overrides: Sequence[str], params=None, ends: bool = False) -> list[list[str]]:
    """A sweep's axes, each key's ``key=value`` lines: ``params`` (key: value or sweep), then the
    command line, a later key replacing an earlier one in its place; with ``ends`` an interval
    is its two ends (a grid sweeper cannot list one: Hydra's parser says so)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    axes: dict[str, list[str]] = {}
    with _hydra():  # its config loader lists a group's options: norm='glob(equi*)'
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        for o in parser.parse_overrides(lines):
            key = o.get_key_element()
            if ends and o.is_interval_sweep():
                values = [o.value().start, o.value().end]
            elif o.is_sweep_override():
                values = list(o.sweep_string_iterator())
            else:
                values = [o.get_value_element_as_str()]
            axes[key] = [f"{key}={v}" for v in values]
    return list(axes.values())


def expand(overrides: Sequence[str], params=None) -> list[list[str]]:
    """Every job of a sweep, as Hydra's basic sweeper makes them: every combination of its
    :func:`_axes`, in order."""
    return [list(job) for job in itertools.product(*_axes(overrides, params))]


def enumerates(sweeper: DictConfig) -> bool:
    """Whether a sweeper (``hydra.sweeper``) runs every combination of its params (a grid
    sweeper); a searching one (Optuna, ...) draws the jobs it runs."""
    return str(sweeper.get("_target_")).rpartition(".")[2] in GRID_SWEEPERS


def sweep_params(cfg: DictConfig) -> dict:
    """The params a config's sweeper is given (``hydra.sweeper.params``, key: value or sweep).

    A grid sweeper gets them all. A searching one gets them without the experiment's own grid
    (its norms x seeds, composed under the grid sweeper; an entry the command line or a preset
    changed stays): a search over seeds would draw seeds the experiment does not have, and
    tuning compares trials of one norm. Its trials run the experiment's single run (the
    configured ``norm`` and ``seed``, or those the command line fixes) at the values it draws."""
    params = _params(cfg)
    name = cfg.hydra.runtime.choices.get("experiment")
    if enumerates(cfg.hydra.sweeper) or not name:
        return params
    grid = _params(_reference(_experiment(cfg, name)))
    return {k: v for k, v in params.items() if k not in grid or str(grid[k]) != str(v)}


def _params(cfg: DictConfig) -> dict:
    params = cfg.hydra.sweeper.get("params")
    return OmegaConf.to_container(params, resolve=True) if params is not None else {}


def probes(overrides: Sequence[str], params=None) -> list[list[str]]:
    """The jobs a searching sweeper may draw that can be listed: the first value of every axis,
    then each other value of one axis at a time (every choice, a range's values, an
    interval's other end)."""
    axes = _axes(overrides, params, ends=True)
    first = [values[0] for values in axes]
    jobs = [first]
    for i, values in enumerate(axes):
        jobs += [[*first[:i], v, *first[i + 1 :]] for v in values[1:]]
    return jobs


def _sweep_config(overrides: Sequence[str]) -> DictConfig:
    """A sweep's config under its command line's fixed overrides (its sweeper, its params)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    for o in parsed:
        if o.is_sweep_override() and o.is_hydra_override():  # Hydra: its error in 3 lines
            key, value = o.key_or_group, o.input_line.partition("=")[2]
            param = key.removeprefix("hydra.sweeper.params.")
            raise ConfigError(
                f"{o.input_line}: a key of Hydra's own takes one value, not a sweep"
                + (f"; sweep {param} itself: -m {param}={value}" if param != key else "")
            )
    return compose_raw([o.input_line for o in parsed if not o.is_sweep_override()])


def searches(overrides: Sequence[str]) -> bool:
    """Whether ``-m <overrides>`` runs a searching sweeper (Optuna, ...) rather than a grid."""
    return not enumerates(_sweep_config(overrides).hydra.sweeper)


def jobs(overrides: Sequence[str], multirun: bool = True) -> list[list[str]]:
    """Each job's overrides: the command line itself, or with ``multirun`` its sweep's jobs (a
    searching sweeper's: its :func:`probes`)."""
    for override in overrides:
        _not_a_flag(override)
    if not multirun:
        return [list(overrides)]
    cfg = _sweep_config(overrides)
    params = sweep_params(cfg)
    grid = enumerates(cfg.hydra.sweeper)
    return expand(overrides, params) if grid else probes(overrides, params)


__all__ = [
    "CHOICE_GROUPS",
    "CONF_DIR",
    "GROUPS",
    "compose",
    "compose_raw",
    "config_dirs",
    "enumerates",
    "expand",
    "job_choices",
    "jobs",
    "locate",
    "options",
    "override_key",
    "probes",
    "recorded_reference",
    "reference",
    "register",
    "searches",
    "sweep_params",
    "user_sources",
    "world_size",
]
