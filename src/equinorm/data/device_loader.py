"""The device-resident loader (airbench's habit) for datasets that fit in device memory.

The whole uint8 dataset is moved to the device once. Each epoch takes a permutation and the crop
offsets/flips of every example from generators seeded by (seed, epoch), so the order and the
augmentation are reproducible per seed and can resume at any batch. Crop with zero padding and
horizontal flip are done per image, in batches, on the device (:mod:`equinorm.data.augment`), with
torchvision's ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()`` semantics. Under DDP the
permutation is sharded across ranks (each rank gets the same number of examples, like
``DistributedSampler`` with ``drop_last``), and across virtual devices within a rank
(:mod:`equinorm.data.sharding`); the test set is split without dropping anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from equinorm.data import seeding
from equinorm.data.augment import crop_flip, draw_crop_flip
from equinorm.data.base import num_batches
from equinorm.data.sharding import train_shard


class DeviceLoader:
    def __init__(
        self,
        images: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        crop_padding: int = 0,
        flip: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        virtual_devices: int = 1,
        drop_last: bool = False,
        max_batches: int | None = None,
    ) -> None:
        if batch_size % virtual_devices:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {virtual_devices}")
        self.device = torch.device(device)
        self.images = torch.as_tensor(images, device=self.device)
        self.labels = torch.as_tensor(labels, device=self.device).long()
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("DeviceLoader takes uint8 images of shape (N, C, H, W)")
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding if train else 0
        self.flip = flip and train
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.virtual_devices = virtual_devices if train else 1
        self.drop_last = drop_last
        self.max_batches = max_batches
        if mean is not None:
            c = self.images.shape[1]
            self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1)
            self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1)
        else:
            self.mean = self.std = None

    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch."""
        n = len(self.labels)
        if self.train:
            return n // (self.world_size * self.virtual_devices) * self.virtual_devices
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return num_batches(self.num_examples, self.batch_size, self.drop_last, self.max_batches)

    def epoch_indices(self, epoch: int) -> Tensor:
        """This rank's example indices for ``epoch``, in order."""
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size, device="cpu")
        g = seeding.generator(self.seed, epoch, seeding.PERMUTATION)
        perm = torch.randperm(n, generator=g, device="cpu")  # host draws: the same on any device
        k = self.virtual_devices
        return train_shard(perm, self.rank, self.world_size, k, self.batch_size // k)

    def iterate(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of ``epoch`` from ``start_batch`` on: float images (normalized) and labels."""
        idx = self.epoch_indices(epoch)
        if self.crop_padding or self.flip:
            g = seeding.generator(self.seed, epoch, seeding.AUGMENT)
            # drawn for every example id, so that shards and resumed runs agree
            aug = draw_crop_flip(len(self.labels), self.crop_padding, self.flip, g)
            top, left, flips = (t.to(self.device, non_blocking=True) for t in aug)
        idx = idx.to(self.device, non_blocking=True)
        for b in range(start_batch, len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[sel]
            if self.crop_padding or self.flip:
                x = crop_flip(x, top[sel], left[sel], flips[sel], self.crop_padding)
            yield self.to_float(x), self.labels[sel]

    def __iter__(self):
        return self.iterate(0)

    def to_float(self, x: Tensor) -> Tensor:
        x = x.float().div_(255)
        if self.mean is not None:
            x = x.sub_(self.mean).div_(self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
