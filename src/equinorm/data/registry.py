"""The dataset registry: names of the Hydra group ``dataset`` -> their sources."""

from __future__ import annotations

import inspect

from equinorm.data.base import DatasetInfo, Source, default_root
from equinorm.data.cifar import Cifar10, Cifar100
from equinorm.data.digits import Digits
from equinorm.data.imagenet import ImageNet
from equinorm.data.svhn import Svhn

DATASETS: dict[str, type[Source]] = {
    "cifar10": Cifar10,
    "cifar100": Cifar100,
    "svhn": Svhn,
    "imagenet": ImageNet,
    "digits": Digits,
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name].info


def source_options(name: str) -> list[str]:
    """Options of ``name``'s source beyond root/download/verify (e.g. svhn: extra)."""
    params = inspect.signature(DATASETS[name].__init__).parameters
    return [p for p in params if p not in {"self", "root", "download", "verify"}]


def get_source(
    name: str, root: str | None = None, *, download: bool = True, verify: bool = True, **options
) -> Source:
    """The source of ``name`` reading from ``root`` (default: $EQUINORM_DATA, else data/)."""
    dataset_info(name)
    valid = source_options(name)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise TypeError(
            f"dataset {name!r} takes no option(s) {', '.join(bad)}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return DATASETS[name](root or default_root(), download=download, verify=verify, **options)
