"""Datasets (CIFAR-10/100, SVHN+extra, ImageNet, the embedded digits) and the input pipeline."""

from equinorm.data.base import DatasetInfo, default_root
from equinorm.data.device_loader import DeviceLoader
from equinorm.data.loaders import Data, build_loaders
from equinorm.data.registry import DATASETS, dataset_info, get_source
from equinorm.data.torch_loader import TorchLoader, build_transform

__all__ = [
    "DATASETS",
    "Data",
    "DatasetInfo",
    "DeviceLoader",
    "TorchLoader",
    "build_loaders",
    "build_transform",
    "dataset_info",
    "default_root",
    "get_source",
]
