"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits.

1,797 real grayscale images (UCI optical recognition of handwritten digits), shipped inside
scikit-learn, so the demo needs no download. Pixels 0..16 are rescaled to uint8 0..255. The
train/test split is fixed (stratified, 20% test, ``split_seed``), the same for every run seed.
"""

from __future__ import annotations

import math

import numpy as np

from equinorm.data.base import ArrayDataset, DatasetInfo, Source

TOTAL = 1_797  # images in scikit-learn's digits: the default split's 1,437 + 360


class Digits(Source):
    info = DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3759,), True, 1_437, 360)
    how_to_get = "Install scikit-learn (pip install 'equinorm[demo]'); the data ships inside it."

    def __init__(
        self, root=None, download=True, verify=True, split_seed: int = 0, test_fraction: float = 0.2
    ):
        super().__init__(root or ".", download, verify)
        self.split_seed = split_seed
        self.test_fraction = test_fraction
        self._split = None
        classes = self.info.num_classes
        if not classes <= TOTAL - self.train_size <= TOTAL - classes:  # stratified: both sides
            raise ValueError(
                f"test_fraction={test_fraction} must hold out {classes} to {TOTAL - classes:,} of "
                f"the {TOTAL:,} images (at least one per class in each split)"
            )
        if not 0 <= split_seed < 2**32:
            raise ValueError(f"split_seed={split_seed} must be in 0..2**32-1")

    @property
    def train_size(self) -> int:
        """As scikit-learn splits: the test images are ceil(test_fraction x all of them)."""
        f = self.test_fraction
        return TOTAL - (math.ceil(f * TOTAL) if 0 < f < 1 else 0)

    def prepare(self) -> None:
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError as exc:
            raise self.error(f"scikit-learn is not installed. {self.how_to_get}") from exc

    def _splits(self):
        if self._split is None:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split

            digits = load_digits()
            images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
            labels = digits.target.astype(np.int64)
            self._split = train_test_split(
                images,
                labels,
                test_size=self.test_fraction,
                random_state=self.split_seed,
                stratify=labels,
            )
        return self._split

    def arrays(self, train: bool):
        x_train, x_test, y_train, y_test = self._splits()
        return (x_train, y_train) if train else (x_test, y_test)

    def dataset(self, train: bool, transform):
        return ArrayDataset(*self.arrays(train), transform)
