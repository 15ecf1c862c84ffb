"""The validation split (``dataset.val_size``): images held out of the training set to choose
hyper-parameters on, so that the test set is never used to choose anything (docs/tuning.md).

The split is stratified by class (each class gives its share of ``val_size``, largest remainders
first, so the total is exact) and drawn from a fixed stream that depends on neither the run seed
nor the normalization: every run of a tuning study sees the same training and validation images.
``val_size=0`` (the default) is the paper's protocol: train on the whole training set.
"""

from __future__ import annotations

import numpy as np

from equinorm.data import seeding
from equinorm.errors import ConfigError


def split(labels, val_size: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) into ``labels``, both sorted; raises ``ConfigError``
    (one line) when ``val_size`` leaves a class, or the whole set, with nothing to train on."""
    labels = np.asarray(labels)
    n = len(labels)
    if val_size < 0 or val_size >= n:
        raise ConfigError(
            f"dataset.val_size={val_size}: must be 0 (no validation split) or 1..{n - 1} "
            f"(the training set holds {n} images)"
        )
    counts = np.bincount(labels, minlength=num_classes)
    share = val_size * counts / n
    take = np.floor(share).astype(int)
    # largest remainders get the images the floors left over; ties to the smaller class index
    order = np.lexsort((np.arange(num_classes), -(share - take)))
    take[order[: val_size - take.sum()]] += 1
    full = np.flatnonzero((take >= counts) & (counts > 0))
    if len(full):
        most = int(min(n * (counts[counts > 0] - 1) / counts[counts > 0]))
        raise ConfigError(
            f"dataset.val_size={val_size} would hold out every training image of class "
            f"{int(full[0])} ({int(counts[full[0]])} images); at most {most} keeps one of each"
        )
    rng = np.random.default_rng(seeding.derive_seed(seeding.VALIDATION))
    held = [rng.permutation(np.flatnonzero(labels == c))[: take[c]] for c in range(num_classes)]
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=int)
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return train, val
