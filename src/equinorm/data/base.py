"""What a dataset source provides, and the checks shared by all of them (docs/spec.md section 4).

A source knows its intrinsic facts (classes, channels, image size, channel mean/std), where its
files live under ``root``, how to check them (existence; the published md5 checksums when
``verify``), how to download them, and how to hand them over: as uint8 arrays for the
device-resident loader, or as a torchvision dataset for the DataLoader path.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from equinorm.errors import DatasetError


def torchvision_datasets():
    """``torchvision.datasets``, imported where a dataset needs it: importing torchvision takes
    seconds (it loads its models and ops), which every run of the embedded digits would pay."""
    from torchvision import datasets

    return datasets


DATA_ENV = "EQUINORM_DATA"
DOWNLOAD_TIMEOUT_S = 20.0


def default_root() -> str:
    """``$EQUINORM_DATA`` if set, else ``data/``."""
    return os.environ.get(DATA_ENV) or "data"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    image_size: int  # training resolution fed to the network
    mean: tuple[float, ...]  # per-channel mean of pixels in [0, 1] (training set)
    std: tuple[float, ...]
    in_memory: bool  # small enough for the device-resident loader
    train_size: int = 0  # training images (SVHN: train + extra)
    test_size: int = 0  # evaluation images


class Source:
    """Base class of the dataset sources; subclasses fill in the hooks they need."""

    info: DatasetInfo
    how_to_get: str = ""

    def __init__(self, root: str | Path, download: bool = True, verify: bool = True):
        self.root = Path(root).expanduser()
        self.download = download
        self.verify = verify

    @property
    def train_size(self) -> int:
        """The training images this source serves with its options (``info``'s: the release's)."""
        return self.info.train_size

    # -- hooks ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make sure the files are present (downloading if allowed) and, if verify, intact."""
        raise NotImplementedError

    def arrays(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of a split (in-memory datasets)."""
        raise NotImplementedError(f"{self.info.name} is not an in-memory dataset")

    def dataset(self, train: bool, transform: Callable | None) -> Dataset:
        """A map-style dataset of (PIL image -> transform, label) for the DataLoader path."""
        raise NotImplementedError

    def train_labels(self) -> np.ndarray:
        """The training split's labels in ``dataset(True, ...)``'s order (the validation split)."""
        return np.asarray(self.arrays(True)[1])

    # -- shared helpers ------------------------------------------------------------------------
    def error(self, what: str) -> DatasetError:
        return DatasetError(f"{self.info.name}: {what}")

    def check_files(self, files: Sequence[tuple[Path, str | None]], fetch: Callable | None) -> None:
        """Existence (downloading once via ``fetch`` if allowed), then md5 if ``verify``."""
        missing = [p for p, _ in files if not p.is_file()]
        if missing and self.download and fetch is not None:
            self._fetch(fetch, missing[0])
            missing = [p for p, _ in files if not p.is_file()]
        if missing:
            raise self.error(
                f"{missing[0]} not found ({len(missing)} of {len(files)} files missing). "
                f"{self.how_to_get} Looked in dataset.root={self.root}"
            )
        if self.verify:
            from torchvision.datasets.utils import check_md5

            for path, md5 in files:
                if md5 is not None and not check_md5(path, md5):
                    raise self.error(
                        f"{path} is corrupt or truncated (md5 differs from the published "
                        f"{md5}); delete it and download again, or set dataset.verify=false to "
                        "use it unchecked"
                    )

    def check_arrays(self, images: np.ndarray, labels, where: Path | str, layout="NCHW") -> None:
        """What a split's arrays must be, named with the file they came from: uint8 pixels of
        this dataset's channels and size, one label per image, labels 0..classes-1."""
        info, images, labels = self.info, np.asarray(images), np.asarray(labels)
        size, n = info.image_size, len(images)
        expected = {"NCHW": (info.channels, size, size), "NHWC": (size, size, info.channels)}
        fix = "it is not the dataset's release: delete it and download again, or remake it"
        if images.shape[1:] != expected[layout]:
            raise self.error(
                f"{where}: images of shape {images.shape[1:]}, expected {info.channels} channels "
                f"of {size}x{size} ({layout}); {fix}"
            )
        if images.dtype != np.uint8:
            raise self.error(f"{where}: pixels are {images.dtype}, expected uint8 0-255; {fix}")
        if labels.shape != (n,):
            raise self.error(f"{where}: {n} images but {labels.size} labels; {fix}")
        if n and not np.issubdtype(labels.dtype, np.integer):
            raise self.error(f"{where}: labels are {labels.dtype}, expected integers; {fix}")
        if n and (labels.min() < 0 or labels.max() >= info.num_classes):
            raise self.error(
                f"{where}: labels {labels.min()}..{labels.max()} outside 0..{info.num_classes - 1}"
                f" ({info.num_classes} classes); {fix}"
            )

    def _fetch(self, fetch: Callable, first_missing: Path) -> None:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        folder = first_missing.parent  # made with its parents, deepest first
        made = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fetch()
        except Exception as exc:  # network down, proxy, disk full, bad archive...
            for path in made:  # a mistyped root is not left behind, empty
                with contextlib.suppress(OSError):
                    path.rmdir()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise self.error(
                f"{first_missing} not found and the download failed ({reason[:200]}). "
                f"{self.how_to_get} Looked in dataset.root={self.root}"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous)


def num_batches(examples: int, batch_size: int, drop_last: bool, max_batches: int | None) -> int:
    """Batches per epoch of a loader: with or without the last partial batch, capped."""
    batches = examples // batch_size if drop_last else -(-examples // batch_size)
    return min(batches, max_batches) if max_batches else batches


class ArrayDataset(Dataset):
    """uint8 (N, C, H, W) arrays served as (transform(PIL image), label) pairs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        img = self.images[index]
        img = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[index])
