"""From a ``dataset`` config node to the loaders (train, test, and validation when
``dataset.val_size`` holds images out of the training set: :mod:`equinorm.data.validation`).

``loader: auto`` picks the device-resident loader for the datasets that fit in device memory
(CIFAR, SVHN, digits) and the DataLoader path otherwise (ImageNet). Both loaders expose
``len(loader)`` and ``loader.iterate(epoch, start_batch)``; the validation images are served like
the test set (no augmentation, every image once, split across ranks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Subset

from equinorm.data import validation
from equinorm.data.base import DatasetInfo, Source
from equinorm.data.device_loader import DeviceLoader
from equinorm.data.registry import get_source
from equinorm.data.torch_loader import TorchLoader, build_transform
from equinorm.errors import ConfigError, DatasetError

log = logging.getLogger("equinorm")

#: keys every dataset node has; any other key is an option of that dataset's source
COMMON_KEYS = {
    "name",
    "root",
    "download",
    "verify",
    "standardize",
    "loader",
    "workers",
    "drop_last",
    "augment",
    "val_size",
}
LOADERS = ("auto", "device", "torch")


@dataclass
class Data:
    train: Any
    test: Any
    info: DatasetInfo
    val: Any = None  # the validation loader; None without dataset.val_size


def source_of(dataset: Mapping) -> Source:
    """The source a ``dataset`` config node describes (its extra keys are the source's options)."""
    options = {k: v for k, v in dataset.items() if k not in COMMON_KEYS}
    return get_source(
        dataset["name"],
        dataset.get("root"),
        download=dataset.get("download", True),
        verify=dataset.get("verify", True),
        **options,
    )


def loader_kind(dataset: Mapping, info: DatasetInfo) -> str:
    """The loader a ``dataset`` node gets (``device`` or ``torch``); raises :class:`ConfigError`
    where the node asks what that loader cannot do, or sets an option it would not read."""
    kind, aug = dataset.get("loader", "auto"), dataset.get("augment") or {}
    if kind not in LOADERS:
        raise ConfigError(f"dataset.loader={kind!r} is not one of {', '.join(LOADERS)}")
    if kind == "auto":
        kind = "device" if info.in_memory else "torch"
    if kind == "device" and not info.in_memory:
        raise ConfigError(
            f"dataset.loader=device: {info.name} does not fit in device memory; "
            "use dataset.loader=torch"
        )
    if kind == "device" and aug.get("random_resized_crop"):
        raise ConfigError("dataset.augment.random_resized_crop needs dataset.loader=torch")
    if aug.get("random_resized_crop") and aug.get("crop_padding"):
        raise ConfigError(
            f"dataset.augment.crop_padding={aug['crop_padding']} is not read with "
            "dataset.augment.random_resized_crop=true (its crops replace pad + crop): set it to 0"
        )
    if aug.get("eval_resize") is not None and not aug.get("random_resized_crop"):
        raise ConfigError(  # else a run of its own that computes the experiment's
            f"dataset.augment.eval_resize={aug['eval_resize']} is read only with "
            "dataset.augment.random_resized_crop=true (the test images' resize before the crop)"
        )
    return kind


def standardization(dataset: Mapping, info: DatasetInfo, default: bool) -> tuple | None:
    """(mean, std) the images are standardized with per channel -- ``dataset.standardize``, else
    ``default`` (the norm's: EquiNorm takes raw pixels, paper 5.2); None: pixels in [0, 1]."""
    standardize = dataset.get("standardize")
    standardize = default if standardize is None else bool(standardize)
    return (tuple(info.mean), tuple(info.std)) if standardize else None


def build_loaders(
    dataset: Mapping,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: str | torch.device = "cpu",
    standardize_default: bool = True,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    virtual_devices: int = 1,
    max_train_batches: int | None = None,
    max_eval_batches: int | None = None,
    prepare: bool = True,
    training: bool = True,
) -> Data:
    """Build the loaders for ``dataset`` (a mapping shaped like conf/dataset/*.yaml).

    ``prepare=False`` skips the file checks (and download) when the caller has done them.
    ``batch_size`` is per device: with ``virtual_devices=k`` each training batch holds the ``k``
    devices' micro-batches of ``batch_size`` in turn (:mod:`equinorm.data.sharding`).
    ``training=False``: the evaluation loaders only (``Data.train`` None; no training images read).
    """
    source = source_of(dataset)
    if prepare:
        source.prepare()
    info = source.info
    mean, std = standardization(dataset, info, standardize_default) or (None, None)
    aug = dict(dataset.get("augment") or {})
    kind = loader_kind(dataset, info)

    common = {
        "seed": seed,
        "device": device,
        "channels_last": channels_last,
        "rank": rank,
        "world_size": world_size,
    }
    val_size = int(dataset.get("val_size") or 0)
    held = None  # (train indices, validation indices) into the training split
    if val_size:
        held = validation.split(source.train_labels(), val_size, info.num_classes)
    loaders = []
    train_index, val_index = held if held else (None, None)
    # (images of the training split?, its augmentation and batches?, the indices it takes)
    parts = [(True, True, train_index)] if training else []
    parts.append((False, False, None))
    if held:
        parts.append((True, False, val_index))
    for from_train, train, index in parts:
        bs = batch_size * virtual_devices if train else eval_batch_size
        common["virtual_devices"] = virtual_devices if train else 1
        limit = max_train_batches if train else max_eval_batches
        drop = bool(dataset.get("drop_last", False)) and train
        if kind == "device":
            images, labels = source.arrays(from_train)
            if index is not None:
                images, labels = images[index], labels[index]
            loaders.append(
                DeviceLoader(
                    images,
                    labels,
                    bs,
                    train=train,
                    crop_padding=int(aug.get("crop_padding", 0)),
                    flip=bool(aug.get("flip", False)),
                    mean=mean,
                    std=std,
                    drop_last=drop,
                    max_batches=limit,
                    **common,
                )
            )
        else:
            transform = build_transform(
                train,
                info.image_size,
                int(aug.get("crop_padding", 0)),
                bool(aug.get("flip", False)),
                mean,
                std,
                bool(aug.get("random_resized_crop", False)),
                aug.get("eval_resize"),
            )
            images = source.dataset(from_train, transform)
            loaders.append(
                TorchLoader(
                    images if index is None else Subset(images, index.tolist()),
                    bs,
                    train=train,
                    workers=int(dataset.get("workers", 4)),
                    drop_last=drop,
                    max_batches=limit,
                    **common,
                )
            )
    train = loaders.pop(0) if training else None
    if train is not None and not len(train):  # e.g. a batch larger than the data with drop_last
        raise DatasetError(
            f"{info.name}: this process's share of the training images makes no batch of "
            f"{batch_size * virtual_devices} with dataset.drop_last=true: lower "
            "train.batch_size or set dataset.drop_last=false"
        )
    if train is not None and train.num_examples < batch_size * virtual_devices:
        log.warning(
            "%s: a training batch of %d is more than this process's %d training images: every "
            "epoch is one step on %d images",
            info.name,
            batch_size * virtual_devices,
            train.num_examples,
            train.num_examples,
        )
    return Data(train, loaders[0], info, loaders[1] if held else None)
