"""The standard DataLoader path: torchvision transforms in worker processes (ImageNet; fallback).

Randomness is reproducible whatever the number of workers: the sampler yields (index, epoch)
pairs and each example's transform runs under a torch seed derived from (seed, epoch, index).
The sampler shards across DDP ranks like ``DistributedSampler`` and can start mid-epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from equinorm.data import seeding
from equinorm.data.base import num_batches
from equinorm.data.sharding import train_shard


def build_transform(
    train: bool,
    image_size: int,
    crop_padding: int = 0,
    flip: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    random_resized_crop: bool = False,
    eval_resize: int | None = None,
) -> Callable:
    """torchvision transforms: CIFAR-style pad+crop+flip, or ImageNet-style resized crops."""
    from torchvision import transforms as T  # here: importing torchvision costs seconds

    steps: list = []
    if random_resized_crop:
        steps.append(
            T.RandomResizedCrop(image_size)
            if train
            else T.Compose([T.Resize(eval_resize or image_size), T.CenterCrop(image_size)])
        )
    elif train and crop_padding:
        steps.append(T.RandomCrop(image_size, padding=crop_padding))
    if train and flip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    if mean is not None:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


class EpochSampler(Sampler):
    """Yields (index, epoch) pairs: a seeded permutation per epoch, sharded across ranks."""

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        virtual_devices: int = 1,
        micro_batch: int = 1,
    ):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.virtual_devices, self.micro_batch = virtual_devices, micro_batch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration covers ``epoch``, skipping its first ``start`` examples of this rank."""
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = seeding.generator(self.seed, self.epoch, seeding.PERMUTATION)
            perm = torch.randperm(self.n, generator=g, device="cpu")
            k = self.virtual_devices
            return train_shard(perm, self.rank, self.world_size, k, self.micro_batch).tolist()
        return list(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.start :]:
            yield i, self.epoch

    def __len__(self) -> int:
        return len(self.indices()) - self.start


class SeededDataset(Dataset):
    """Runs ``base[index]`` under a torch seed derived from (seed, epoch, index)."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, epoch = key
        torch.manual_seed(seeding.derive_seed(self.seed, epoch, seeding.SAMPLE, index))
        return self.base[index]


class TorchLoader:
    """A DataLoader with the DeviceLoader's interface: ``len`` and ``iterate(epoch, start)``."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        workers: int = 4,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        virtual_devices: int = 1,
        drop_last: bool = False,
        max_batches: int | None = None,
    ) -> None:
        if batch_size % virtual_devices:
            raise ValueError(f"batch_size {batch_size} is not a multiple of {virtual_devices}")
        k = virtual_devices if train else 1
        self.device = torch.device(device)
        self.batch_size, self.drop_last, self.max_batches = batch_size, drop_last, max_batches
        self.channels_last = channels_last
        self.sampler = EpochSampler(
            len(dataset),
            shuffle=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            virtual_devices=k,
            micro_batch=batch_size // k,
        )
        self.loader = DataLoader(
            SeededDataset(dataset, seed),
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    @property
    def num_examples(self) -> int:
        return len(self.sampler.indices())

    def __len__(self) -> int:
        return num_batches(self.num_examples, self.batch_size, self.drop_last, self.max_batches)

    def iterate(self, epoch: int = 0, start_batch: int = 0):
        self.sampler.set_epoch(epoch, start_batch * self.batch_size)
        for b, (x, y) in enumerate(self.loader, start=start_batch):
            if b >= len(self):
                break
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)

    def __iter__(self):
        return self.iterate(0)
