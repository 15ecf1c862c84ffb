"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) through torchvision's dataset classes (paper 6.1).

Files: ``<root>/cifar-10-batches-py/`` and ``<root>/cifar-100-python/``, the python-pickle
releases, downloaded on first use. With ``verify=false`` a local copy is used without its md5
checks (pre-extracted copies, fabricated test files).
"""

from __future__ import annotations

import pickle

import numpy as np

from equinorm.data.base import DatasetInfo, Source, torchvision_datasets
from equinorm.errors import DatasetError


def _unchecked(cls):
    """The torchvision class with its md5 checks reduced to existence checks."""

    class Unchecked(cls):
        def _check_integrity(self) -> bool:
            files = self.train_list + self.test_list
            return all((self._folder() / name).is_file() for name, _ in files)

        def _load_meta(self) -> None:
            with open(self._folder() / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        def _folder(self):
            from pathlib import Path

            return Path(self.root) / self.base_folder

    Unchecked.__name__ = cls.__name__
    return Unchecked


class CifarSource(Source):
    tv_name = "CIFAR10"  # torchvision's class (imported on first use: it costs seconds)

    @property
    def tv_class(self) -> type:
        return getattr(torchvision_datasets(), self.tv_name)

    @property
    def folder(self):
        return self.root / self.tv_class.base_folder

    @property
    def how_to_get(self) -> str:  # type: ignore[override]
        return (
            f"Download {self.tv_class.url} and extract it into dataset.root "
            "(or run once where the network is reachable, with dataset.download=true)."
        )

    def files(self):
        entries = self.tv_class.train_list + self.tv_class.test_list
        meta = self.tv_class.meta
        return [(self.folder / n, md5) for n, md5 in entries] + [
            (self.folder / meta["filename"], meta["md5"])
        ]

    def prepare(self) -> None:
        self.check_files(self.files(), fetch=lambda: self.tv_class(self.root, download=True))

    def _load(self, train: bool, transform=None):
        cls = self.tv_class if self.verify else _unchecked(self.tv_class)
        try:
            ds = cls(str(self.root), train=train, transform=transform, download=False)
            ds.__class__ = self.tv_class  # past the checks (in __init__) it is torchvision's
            return ds  # own class, which DataLoader workers of spawn or forkserver unpickle
        except Exception as exc:  # find the file that does not unpickle
            for path, _ in self.files():
                try:
                    with open(path, "rb") as f:
                        entry = pickle.load(f, encoding="latin1")
                    if path.name != self.tv_class.meta["filename"]:
                        np.asarray(entry["data"]).reshape(len(entry["data"]), 3, 32, 32)
                except Exception as bad:
                    raise self.error(
                        f"{path} is corrupt or truncated ({type(bad).__name__}: {bad}); "
                        "delete it and download again"
                    ) from exc
            raise

    def _checked(self, train: bool, transform=None):
        """The split, checked (counts, shapes, pixels, label range); a failure names the file."""
        ds = self._load(train, transform)
        try:
            self.check_arrays(ds.data, ds.targets, self.folder, layout="NHWC")
        except DatasetError:
            for name, _ in self.tv_class.train_list if train else self.tv_class.test_list:
                with open(self.folder / name, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                data = np.asarray(entry["data"])
                labels = entry.get("labels", entry.get("fine_labels"))
                self.check_arrays(data.reshape(len(data), 3, 32, 32), labels, self.folder / name)
            raise
        return ds

    def arrays(self, train: bool):
        ds = self._checked(train)
        return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(
            ds.targets, dtype=np.int64
        )

    def dataset(self, train: bool, transform):
        return self._checked(train, transform)


class Cifar10(CifarSource):
    tv_name = "CIFAR10"
    info = DatasetInfo(
        "cifar10",
        10,
        3,
        32,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        True,
        50_000,
        10_000,
    )


class Cifar100(CifarSource):
    tv_name = "CIFAR100"
    info = DatasetInfo(
        "cifar100",
        100,
        3,
        32,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        True,
        50_000,
        10_000,
    )
