"""ILSVRC 2012 ImageNet from the standard folder layout (paper section 6.4).

Expected: ``<root>/imagenet/train/<wnid>/*.JPEG`` and ``<root>/imagenet/val/<wnid>/*.JPEG``
(docs/runs.md, "Datasets", says how to prepare it). With ``verify`` the two splits must hold the
same 1000 class folders. Served by the DataLoader path (torchvision's ``ImageFolder``).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from equinorm.data.base import DatasetInfo, Source, torchvision_datasets
from equinorm.errors import DatasetError


class Folder(Dataset):
    """torchvision's ImageFolder whose load errors name the image file (a module-level wrapper:
    DataLoader workers started by spawn or forkserver, Python 3.14's default, unpickle it)."""

    def __init__(self, root: str, transform=None) -> None:
        self.folder = torchvision_datasets().ImageFolder(root, transform=transform)

    @property
    def targets(self) -> list[int]:
        return self.folder.targets

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index):
        try:
            return self.folder[index]
        except Exception as exc:
            raise DatasetError(
                f"imagenet: cannot read {self.folder.samples[index][0]} ({type(exc).__name__}: "
                f"{exc}); the file is corrupt or truncated"
            ) from exc


class ImageNet(Source):
    info = DatasetInfo(
        "imagenet",
        1000,
        3,
        224,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        False,
        1_281_167,
        50_000,
    )
    how_to_get = (
        "ImageNet cannot be downloaded automatically: get ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar from image-net.org and arrange them as imagenet/train/<wnid>/ "
        "and imagenet/val/<wnid>/ (docs/runs.md, 'Datasets', says how)."
    )

    @property
    def folder(self):
        return self.root / "imagenet"

    def prepare(self) -> None:
        classes = {}
        for split in ("train", "val"):
            path = self.folder / split
            found = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
            if not found:
                raise self.error(
                    f"no class folders in {path}. {self.how_to_get} "
                    f"Looked in dataset.root={self.root}"
                )
            classes[split] = found
        if classes["train"] != classes["val"] or len(classes["train"]) > 1000:  # labels by name
            odd = sorted(set(classes["train"]) ^ set(classes["val"]))[:3]
            raise self.error(
                f"{self.folder}: train and val must hold the same class folders, at most 1000 "
                f"(train {len(classes['train'])}, val {len(classes['val'])}"
                + (f"; in one only: {', '.join(odd)}" if odd else "")
                + "): labels are numbered by folder name, so they would not match"
            )
        if self.verify and len(classes["train"]) != 1000:
            raise self.error(
                f"{self.folder} holds {len(classes['train'])} train and "
                f"{len(classes['val'])} val class folders, expected the same 1000 in both "
                "(set dataset.verify=false to use a subset)"
            )

    def dataset(self, train: bool, transform):
        return Folder(str(self.folder / ("train" if train else "val")), transform=transform)

    def train_labels(self):
        return np.asarray(self.dataset(True, None).targets)
