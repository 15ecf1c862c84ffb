"""SVHN (Netzer et al. 2011) through torchvision's dataset class (paper section 6.3).

Training uses ``train`` + ``extra`` (73,257 + 531,131 images) unless ``extra=false``; evaluation
uses ``test``. Files: ``<root>/svhn/{train,extra,test}_32x32.mat``.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from torch.utils.data import ConcatDataset

from equinorm.data.base import DatasetInfo, Source, torchvision_datasets


def _svhn() -> type:
    return torchvision_datasets().SVHN


@functools.cache
def _unchecked() -> type:
    """torchvision's SVHN with its md5 check reduced to an existence check."""

    class Unchecked(_svhn()):
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    return Unchecked


TRAIN, EXTRA = 73_257, 531_131  # images in train_32x32.mat and extra_32x32.mat


class Svhn(Source):
    info = DatasetInfo(
        "svhn",
        10,
        3,
        32,
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        True,
        TRAIN + EXTRA,
        26_032,
    )

    def __init__(self, root, download=True, verify=True, extra: bool = True):
        super().__init__(root, download, verify)
        self.extra = extra

    @property
    def train_size(self) -> int:
        return TRAIN + EXTRA if self.extra else TRAIN

    @property
    def folder(self):
        return self.root / "svhn"

    @property
    def how_to_get(self) -> str:  # type: ignore[override]
        urls = ", ".join(v[0] for v in _svhn().split_list.values())
        return f"Download {urls} into dataset.root/svhn/."

    def splits(self, train: bool) -> list[str]:
        return (["train", "extra"] if self.extra else ["train"]) if train else ["test"]

    def prepare(self) -> None:
        for split in self.splits(True) + self.splits(False):
            _, name, md5 = _svhn().split_list[split]
            self.check_files(
                [(self.folder / name, md5)],
                fetch=lambda s=split: _svhn()(str(self.folder), split=s, download=True),
            )

    def _load(self, split: str, transform=None):
        cls = _svhn() if self.verify else _unchecked()
        try:
            ds = cls(str(self.folder), split=split, transform=transform, download=False)
            ds.__class__ = _svhn()  # as CIFAR's: torchvision's class past the checks
            return ds
        except Exception as exc:
            path = self.folder / _svhn().split_list[split][1]
            raise self.error(
                f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                "delete it and download again"
            ) from exc

    def _checked(self, split: str, transform=None):
        """The split, checked (counts, shapes, pixels, label range) against its file."""
        ds = self._load(split, transform)
        self.check_arrays(ds.data, ds.labels, self.folder / _svhn().split_list[split][1])
        return ds

    def arrays(self, train: bool):
        parts = [self._checked(s) for s in self.splits(train)]
        images = np.concatenate([p.data for p in parts]) if len(parts) > 1 else parts[0].data
        labels = np.concatenate([p.labels for p in parts]).astype(np.int64)
        return np.ascontiguousarray(images), labels

    def dataset(self, train: bool, transform):
        parts = [self._checked(s, transform) for s in self.splits(train)]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)
