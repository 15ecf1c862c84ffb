"""A run's identity is what it computes: its config, compared key by key with its experiment's.

A run lives in ``<results_dir>/runs/<name>/<dataset>-<arch>-<norm>/[<variant>/]seed=<k>``. The
variant names every semantic key whose value differs from the config the run is compared against
(:func:`equinorm.experiment.reference`: its experiment, with the options of its names), sorted,
``key=value`` joined by ``,`` -- so any key of any group can be swept (paper section 6.5 compares
norms; a fair comparison tunes them), ``5e-2`` and ``0.05`` are one run, the experiment's own
value names no variant, and an override that changes nothing (a value as the experiment has it)
is the experiment's own run. Keys that change no result (:data:`NON_SEMANTIC`), the keys the
layout names, and keys derived by interpolation from another (``schedule.length: ${epochs}``)
never enter it; ``train.devices`` enters it as the devices the run trains on (unset: the
processes torchrun starts), so a 2-process run is not a 1-process run's. A key the compared config
does not have -- a ``+`` addition nothing reads -- is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from equinorm.errors import ConfigError

#: keys that do not change what a run computes (where things live, how they are shown, how fast;
#: device, threads, memory layout, compile and impl change only the last digits: provenance.json
#: records them per attempt, and the report flags a run resumed under others)
NON_SEMANTIC = (
    "results_dir",
    "run_dir",
    "variant",
    "dataset.root",
    "dataset.download",
    "dataset.verify",
    "dataset.workers",
    "norm.impl",  # EquiNorm's fused or reference implementation: the same function
    "train.device",
    "train.threads",
    "train.channels_last",  # the tensors' memory layout: the same function
    "train.progress",
    "train.checkpoint",
    "train.resume",
    "train.compile",
    "train.compile_mode",
    "train.equilibrium_stats",
    "train.fail_on_divergence",
    "wandb",
    "hydra",
)
#: keys that change the result only where another key is set; elsewhere they are None (and the
#: variant never names them: the other key, where it differs, says it)
READ_ONLY_IF = {
    # every test image is scored: the batch changes only the speed, and fits an evaluation in
    # memory (the advice of one that ran out of it, which must resume the run, not start another)
    "train.eval_batch_size": "train.max_eval_batches",
    "schedule.length": "schedule.rescale",  # read only to stretch the schedule to the run's epochs
}
LAYOUT_GROUPS = ("dataset", "arch", "norm")  # named by the layout's <dataset>-<arch>-<norm>
LAYOUT = ("name", "seed", *(f"{g}.name" for g in LAYOUT_GROUPS))
MAX_LEN = 120  # longer variants keep a readable prefix and a hash (file names stop at 255)
ABSENT = "<absent>"


def semantic(cfg) -> dict:
    """The config as a plain dict without the keys listed in NON_SEMANTIC, None for a key of
    READ_ONLY_IF whose condition does not hold, and the dataset's ``auto`` values resolved."""
    data = (
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if OmegaConf.is_config(cfg)
        else dict(cfg)
    )
    for key in NON_SEMANTIC:
        node, *rest = key.split(".")
        if rest and isinstance(data.get(node), dict):
            data[node].pop(rest[0], None)
        elif not rest:
            data.pop(node, None)
    for key, condition in READ_ONLY_IF.items():
        (node, leaf), (cnode, cleaf) = key.split("."), condition.split(".")
        group, other = data.get(node), data.get(cnode)
        if isinstance(group, dict) and leaf in group and not (other or {}).get(cleaf):
            group[leaf] = None
    _resolve_auto(data)
    return data


def _resolve_auto(data: dict) -> None:
    """The dataset's ``auto`` values as the run resolves them from its config alone: the loader
    (in device memory where the dataset fits) and the input standardization (the norm's: raw
    pixels for EquiNorm), so that naming what ``auto`` picks is the same run, not a variant."""
    # here, not at the top: they import torch, which `--help` and `--version` never need
    from equinorm.data.loaders import loader_kind
    from equinorm.data.registry import DATASETS, dataset_info
    from equinorm.layers.norms import get_norm

    dataset, norm = data.get("dataset"), data.get("norm")
    if not isinstance(dataset, dict) or dataset.get("name") not in DATASETS:
        return
    if dataset.get("loader") == "auto":  # as the loaders pick it (the checks passed it)
        dataset["loader"] = loader_kind(dataset, dataset_info(dataset["name"]))
    if "standardize" in dataset and dataset["standardize"] is None and isinstance(norm, dict):
        with contextlib.suppress(KeyError, TypeError):  # no such norm: the checks refuse it
            dataset["standardize"] = get_norm(norm.get("name")).standardize_input


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(a: dict, b: dict, new_keys_unless: set | None = None) -> list[str]:
    """``key: a -> b`` for every key whose values differ (nested dicts flattened); with
    ``new_keys_unless``, a key only ``b`` has differs only if it is in that set."""
    fa, fb = flatten(a), flatten(b)
    return [
        f"{k}: {fa.get(k, ABSENT)} -> {fb.get(k, ABSENT)}"
        for k in sorted(set(fa) | set(fb))
        if fa.get(k, ABSENT) != fb.get(k, ABSENT)
        and (new_keys_unless is None or k in fa or k in new_keys_unless)
    ]


def value_text(value) -> str:
    """A composed value as one canonical token: ``0.1``, ``true``, ``null``, ``[10,13]``."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, str):  # a str Enum too
        return str(value.value) if hasattr(value, "value") else value
    return json.dumps(value, separators=(",", ":"))


def _derived(cfg: DictConfig) -> set[str]:
    """Keys whose value is an interpolation of another key (``${epochs}``)."""
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    return {k for k, v in raw.items() if isinstance(v, str) and v.startswith("${")}


def as_trained(flat: dict, world_size: int = 1) -> dict:
    """``flat`` (key -> value) as a run of ``world_size`` processes trains it: an unset
    ``train.devices`` is that many devices."""
    if "train.devices" not in flat:
        return flat
    return {**flat, "train.devices": flat["train.devices"] or world_size}


def variant(job: DictConfig, reference: DictConfig, world_size: int = 1) -> dict[str, str]:
    """``{key: value}`` of each semantic key where ``job`` differs from ``reference``."""
    mine = as_trained(flatten(semantic(job)), world_size)
    theirs = as_trained(flatten(semantic(reference)))
    unknown = sorted(set(mine) - set(theirs))
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not a key of this config (nothing would read it); remove it or "
            "check its spelling"
        )
    derived = _derived(job) & _derived(reference)
    items = {}
    for key in sorted(theirs):
        if key in LAYOUT or key in derived or key.endswith(".name"):
            continue
        if key in READ_ONLY_IF and mine.get(key) is None:  # its condition's key names the run
            continue
        if key not in mine:
            items[f"~{key}"] = ""
        elif value_text(mine[key]) != value_text(theirs[key]):
            items[key] = value_text(mine[key])
    return items


def overrides(items: dict[str, str]) -> list[str]:
    """Variant items as the command-line overrides that set them (``~key``: a key removed)."""
    return [k if k.startswith("~") else f"{k}={v}" for k, v in sorted(items.items())]


def dirname(items: dict[str, str]) -> str:
    """The variant as one directory name (:func:`file_name`)."""
    return file_name(",".join(overrides(items)))


def file_name(name: str) -> str:
    """``name`` as one file name: ``/`` written ``%2F``; a long one shortened + hash."""
    name = name.replace("/", "%2F")
    if len(name) > MAX_LEN:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_LEN - 13]}...{digest}"
    return name


def run_dir(cfg: DictConfig, items: dict[str, str]) -> Path:
    """``<results_dir>/runs/<name>/<dataset>-<arch>-<norm>/[<variant>/]seed=<k>``."""
    cell = Path(cfg.results_dir) / "runs" / cfg.name
    cell /= f"{cfg.dataset.name}-{cfg.arch.name}-{cfg.norm.name}"
    return (cell / dirname(items) if items else cell) / f"seed={cfg.seed}"


__all__ = [
    "LAYOUT",
    "NON_SEMANTIC",
    "as_trained",
    "config_diff",
    "dirname",
    "file_name",
    "overrides",
    "run_dir",
    "semantic",
    "value_text",
    "variant",
]
