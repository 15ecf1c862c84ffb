"""Input-pipeline throughput: the device-resident loader against the torchvision DataLoader path.

Both read the same CIFAR-shaped files (fabricated in the real pickle format) and apply the same
augmentation (pad-4 random crop + flip + normalization); images per second are measured over full
passes after a warm-up pass.
"""

from __future__ import annotations

import tempfile
import time

import torch

from equinorm.data import build_loaders
from equinorm.data.fabricate import write_cifar


def _throughput(loader, device: torch.device, epochs: int) -> float:
    def one(epoch):
        n = 0
        for x, _ in loader.iterate(epoch):
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n

    one(0)  # warm-up: worker start-up, first transfer, allocator
    start, n = time.perf_counter(), 0
    for e in range(1, epochs + 1):
        n += one(e)
    return n / (time.perf_counter() - start)


def loader_throughput(
    device: torch.device,
    n_images: int = 50_000,
    batch_size: int = 128,
    epochs: int = 2,
    workers: tuple[int, ...] = (0, 2, 4),
) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        write_cifar(root, "cifar10", n_train=n_images, n_test=10)
        base = {
            "name": "cifar10",
            "root": root,
            "verify": False,
            "download": False,
            "augment": {"crop_padding": 4, "flip": True},
        }
        configs = [("device", 0)] + [("torch", w) for w in workers]
        for kind, w in configs:
            data = build_loaders(
                dict(base, loader=kind, workers=w),
                batch_size=batch_size,
                eval_batch_size=batch_size,
                seed=0,
                device=device,
                standardize_default=True,
            )
            ips = _throughput(data.train, device, epochs)
            rows.append(
                {
                    "loader": kind,
                    "workers": w,
                    "batch_size": batch_size,
                    "images": n_images,
                    "images_per_s": round(ips, 1),
                }
            )
            print(f"  {kind:6s} workers={w}: {ips:12,.0f} images/s", flush=True)
    return rows
