"""Tiny datasets in the real on-disk formats, for tests and benchmarks (never for results).

CIFAR-10/100 python pickles, SVHN ``.mat`` files and an ImageNet class-folder tree of JPEGs,
loaded back through the same code users run (with ``dataset.verify=false``, since their checksums
are not the published ones). Images are random uint8 with a label-dependent brightness so that a
model can learn something from them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _images(rng, n, classes, size=32):
    labels = rng.integers(0, classes, n)
    base = rng.integers(0, 256, (n, 3, size, size))
    shift = (labels * (160 // max(classes - 1, 1))).reshape(-1, 1, 1, 1)
    return ((base // 3) + shift).clip(0, 255).astype(np.uint8), labels.astype(np.int64)


def write_cifar(root, kind="cifar10", n_train=100, n_test=40, seed=0) -> dict:
    """Write ``cifar-10-batches-py`` (5 train batches) or ``cifar-100-python`` under ``root``."""
    rng = np.random.default_rng(seed)
    classes = 10 if kind == "cifar10" else 100
    x_train, y_train = _images(rng, n_train, classes)
    x_test, y_test = _images(rng, n_test, classes)
    if kind == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        label_key = "labels"
        parts = {
            f"data_batch_{i + 1}": s for i, s in enumerate(np.array_split(np.arange(n_train), 5))
        }
        meta = ("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
        files = {name: (x_train[idx], y_train[idx]) for name, idx in parts.items()}
        files["test_batch"] = (x_test, y_test)
    else:
        folder = Path(root) / "cifar-100-python"
        label_key = "fine_labels"
        meta = (
            "meta",
            {
                "fine_label_names": [f"class{i}" for i in range(100)],
                "coarse_label_names": [f"super{i}" for i in range(20)],
            },
        )
        files = {"train": (x_train, y_train), "test": (x_test, y_test)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in files.items():
        entry = {
            "data": x.reshape(len(x), -1),
            label_key: y.tolist(),
            "filenames": [f"{i}.png" for i in range(len(y))],
        }
        if kind == "cifar100":
            entry["coarse_labels"] = (y // 5).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)
    return {"train": (x_train, y_train), "test": (x_test, y_test), "folder": folder}


def write_svhn(root, n_train=60, n_extra=40, n_test=30, seed=0) -> dict:
    """Write ``svhn/{train,extra,test}_32x32.mat`` (X: 32x32x3xN uint8, y: labels 1..10)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("extra", n_extra), ("test", n_test)):
        x, y = _images(rng, n, 10)
        mat_labels = np.where(y == 0, 10, y).reshape(-1, 1).astype(np.uint8)
        savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": mat_labels})
        out[split] = (x, y)
    out["folder"] = folder
    return out


def write_imagenet(root, classes=3, per_class=4, size=40, seed=0) -> Path:
    """Write ``imagenet/{train,val}/n0000000k/*.JPEG``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "imagenet"
    for split in ("train", "val"):
        for c in range(classes):
            d = folder / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            x, _ = _images(rng, per_class, classes, size)
            for i in range(per_class):
                Image.fromarray(x[i].transpose(1, 2, 0)).save(d / f"img_{i}.JPEG")
    return folder


def write_all(root, images: int = 64) -> Path:
    """CIFAR-10, CIFAR-100, SVHN (+extra) and a 4-class ImageNet tree of about ``images``
    training images each under ``root`` (once: a ``.fabricated`` marker says it is done)."""
    root = Path(root)
    if not (root / ".fabricated").is_file():
        write_cifar(root, "cifar10", n_train=images, n_test=images // 2)
        write_cifar(root, "cifar100", n_train=images, n_test=images // 2)
        write_svhn(root, n_train=images // 2, n_extra=images // 2, n_test=images // 2)
        write_imagenet(root, classes=4, per_class=max(images // 16, 4), size=64)
        (root / ".fabricated").touch()
    return root


if __name__ == "__main__":  # python -m equinorm.data.fabricate ROOT [--images N]
    import argparse

    parser = argparse.ArgumentParser(description="Write every dataset, fabricated, under ROOT")
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=64, help="training images per dataset")
    args = parser.parse_args()
    print(f"fabricated datasets in {write_all(args.root, args.images)}")
