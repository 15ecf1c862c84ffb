"""A run's identity beyond its experiment, dataset, architecture, norm and seed: the command-line
overrides that change its config (paper section 6.5 compares norms at their own tuned settings,
so a sweep over any key -- ``schedule.lr=0.1,0.05`` -- is an ordinary experiment).

``run_path`` (conf/train.yaml) is ``<name>/<dataset>-<arch>-<norm>/<variant>/seed=<k>``. The
``<variant>`` (the resolver ``${equinorm.variant:}``) lists the job's overrides as ``key=value``,
the value as composed, sorted by key and joined by ``,`` -- leaving out the keys the layout already
names (experiment, dataset, arch, norm, seed, name, debug) and those that change no result
(:data:`equinorm.train.rundir.NON_SEMANTIC`); with none left the run lives where it always did
(``.../seed=<k>``). ``epochs`` names a run only where it changes the trajectory from the first step
(cosine, a rescaled schedule); where a longer schedule only adds epochs, the run continues
(:meth:`equinorm.train.schedules.Schedule.continues_as`, :func:`equinorm.train.run.decide`).

Unlike Hydra's ``hydra.job.override_dirname`` (the value as typed), an override that sets the
experiment's own value adds nothing (``schedule.lr=0.1`` of an experiment whose lr is 0.1 *is* that
run) and ``0.05``/``5e-2`` name one directory; a config group override is named by its choice
(``mixup=manifold``) and the keys overridden with it are compared against that choice's values.

The variant is read from the job's own overrides (``hydra.overrides.task``, or Hydra's runtime
config inside a job), so it is the same in the process that launches a sweep, in a submitit job on
another machine and in the report; a config composed without its Hydra node has none.
"""

from __future__ import annotations

import functools
import hashlib
import json

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from equinorm.train.rundir import NON_SEMANTIC

#: override keys that never enter the variant (the layout names them, or they change nothing)
NAMED = ("experiment", "dataset", "arch", "norm", "seed", "name", "epochs", "debug", "specialize")
RESOLVER = "equinorm.variant"
MAX_LEN = 120  # longer variants keep a readable prefix and a hash (file names stop at 255)


def _excluded(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in (*NAMED, *NON_SEMANTIC))


def _key(o: Override) -> str:
    return o.key_or_group.split("@")[0]


def value_text(value) -> str:
    """A composed value as one canonical token: ``0.1``, ``true``, ``null``, ``[10,13]``."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _compose(overrides: tuple[str, ...]) -> DictConfig:
    loader = GlobalHydra.instance().config_loader()
    return loader.load_configuration("train", list(overrides), RunMode.RUN)


def _initialized():
    """Hydra's global state for composing (a job has it; a bare composed config may not)."""
    if GlobalHydra.instance().is_initialized():
        return None
    from hydra import initialize_config_dir

    from equinorm.paths import config_dir

    return initialize_config_dir(config_dir=str(config_dir()), version_base="1.3")


@functools.lru_cache(maxsize=256)
def variant_items(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """``key=value`` of each override that changes the experiment's own config (sorted)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    named = [o.input_line for o in parsed if _excluded(_key(o))]
    rest = [o for o in parsed if not _excluded(_key(o))]
    if not rest and not any(line.lstrip("+").startswith("epochs=") for line in named):
        return ()
    context = _initialized()
    if context is not None:
        with context:
            return _items(named, rest)
    return _items(named, rest)


def _items(named: list[str], rest: list[Override]) -> tuple[str, ...]:
    base = _compose(tuple(named))
    choices = base.hydra.runtime.choices
    groups = [o for o in rest if _key(o) in choices]
    items = {}
    for o in groups:
        if str(o.value()) != str(choices.get(_key(o))):
            items[_key(o)] = f"{_key(o)}={o.value()}"
    job = _compose(tuple(named) + tuple(o.input_line for o in rest))
    if groups:  # values overridden together with their group compare against the group's own
        base = _compose(tuple(named) + tuple(o.input_line for o in groups))
    for o in rest:
        key = _key(o)
        if key in choices:
            continue
        mine = OmegaConf.select(job, key, default="<absent>")
        theirs = OmegaConf.select(base, key, default="<absent>")
        if o.type == OverrideType.DEL:
            if theirs != "<absent>":
                items[key] = f"~{key}"
        elif value_text(mine) != value_text(theirs):
            items[key] = f"{key}={value_text(mine)}"
    if _trajectory_epochs(named, job):
        items["epochs"] = f"epochs={job.epochs}"
    return tuple(items[k] for k in sorted(items))


def _trajectory_epochs(named: list[str], job: DictConfig) -> bool:
    """Whether ``epochs=`` changes this run's trajectory from its first step (a schedule over all
    the epochs: cosine, rescaled) -- then it names the run; where a longer schedule only adds
    epochs it does not (the run continues)."""
    from equinorm.errors import ConfigError
    from equinorm.train.schedules import Schedule

    if not any(line.lstrip("+").startswith("epochs=") for line in named):
        return False
    own = _compose(tuple(line for line in named if not line.lstrip("+").startswith("epochs=")))
    if own.epochs == job.epochs:
        return False
    try:
        return Schedule(job.schedule, own.epochs).continues_as(job.epochs) is not None
    except ConfigError:  # the schedule does not fit the experiment's epochs: another run
        return True


def dirname(items: tuple[str, ...]) -> str:
    """The variant as one directory name (``/`` written ``%2F``; long ones shortened + hash)."""
    name = ",".join(items).replace("/", "%2F")
    if len(name) > MAX_LEN:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_LEN - 13]}...{digest}"
    return name


def task_overrides(root) -> tuple[str, ...] | None:
    """The job's command-line overrides: from its config's Hydra node, else Hydra's runtime."""
    found = OmegaConf.select(root, "hydra.overrides.task", default=None) if root else None
    if found is None and HydraConfig.initialized():
        found = HydraConfig.get().overrides.task
    return None if found is None else tuple(found)


def _resolve(*, _root_) -> str:
    overrides = task_overrides(_root_)
    items = variant_items(overrides) if overrides else ()
    return f"{dirname(items)}/" if items else ""


def register() -> None:
    """Register ``${equinorm.variant:}`` with OmegaConf (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve)


__all__ = ["dirname", "register", "task_overrides", "value_text", "variant_items"]
