"""Manifold mixup (Verma et al. 2018) and input mixup (Zhang et al. 2018): the trainer's business.

Per batch: lambda ~ Beta(alpha, alpha), a random permutation of the batch, and a mixing point drawn
uniformly from ``points`` (0 = input, k = after stage k). The model's ``forward(x, hook_at, hook)``
applies :class:`Mixer` there: ``h <- lambda h + (1 - lambda) h[perm]``. The loss mixes the two
targets: the reference code's BCE on softmax outputs against mixed one-hot targets (``bce``), or
``lambda CE(y) + (1 - lambda) CE(y[perm])`` (``ce``).

All draws come from a numpy generator seeded by (seed, rank); its state is checkpointed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from equinorm.data import seeding
from equinorm.errors import ConfigError

MIXUPS = ("none", "input", "manifold")
LOSSES = ("bce", "ce")


def softmax_bce(logits: Tensor, target: Tensor) -> Tensor:
    """The reference code's ``nn.BCELoss()(softmax(logits), target)``, forward and backward, in
    float32; NaN where the logits hold one (a diverged network).

    Autocast is switched off around it (CUDA's refuses ``binary_cross_entropy``), so it is
    ``BCELoss`` itself: logs clamped at -100 and the gradient's denominator ``p (1 - p)`` at 1e-12.
    A softmax output that rounds to 1 (a logit 17 above the others) thus gets the reference's
    finite gradient; written out with ``log1p(-p)`` it got 0 x inf = NaN, and the run diverged.
    A NaN never reaches ``BCELoss``, which refuses it (on a GPU, a device-side assert that ends
    the process): the loss is NaN instead, which the trainer reports as a divergence.
    """
    p = torch.softmax(logits.float(), dim=1)
    number = ~torch.isnan(p)
    with torch.autocast(logits.device.type, enabled=False):
        loss = F.binary_cross_entropy(torch.where(number, p, 0.5), target.float())
    return torch.where(number.all(), loss, torch.nan)


class Mixer:
    """The hook the model applies at the mixing point; one object, so compiled graphs are reused.

    ``lam`` is a 0-dim tensor and ``perm`` an index tensor, both on the device.
    """

    def __init__(self) -> None:
        self.lam: Tensor | None = None
        self.perm: Tensor | None = None

    def __call__(self, h: Tensor) -> Tensor:
        lam = self.lam.to(h.dtype)
        return lam * h + (1 - lam) * h[self.perm]


class Mixup:
    def __init__(self, cfg: Mapping, seed: int, rank: int = 0, mix_points=(0, 1, 2)) -> None:
        self.name = cfg["name"]
        if self.name not in MIXUPS:
            raise ConfigError(f"mixup.name={self.name!r} is not one of {', '.join(MIXUPS)}")
        # mixup=none has no other key (conf/mixup/none.yaml): nothing is drawn
        self.alpha = float(cfg.get("alpha", 1.0))
        self.loss = str(getattr(cfg.get("loss", "ce"), "value", cfg.get("loss", "ce")))
        self.points = [int(p) for p in cfg.get("points", [])]
        if self.alpha <= 0:
            raise ConfigError(f"mixup.alpha={self.alpha} must be > 0")
        if self.loss not in LOSSES:
            raise ConfigError(f"mixup.loss={self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.enabled:
            bad = [p for p in self.points if p not in mix_points]
            if not self.points or bad:
                raise ConfigError(
                    f"mixup.points={self.points} must be a non-empty subset of {list(mix_points)}"
                )
        self.rng = np.random.default_rng(seeding.derive_seed(seed, seeding.MIXUP, rank))
        self.mixer = Mixer()

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def draw(self, batch_size: int, device) -> tuple[int, Tensor, Tensor, float]:
        """(mixing point, lambda as a device tensor, permutation, lambda as a float)."""
        lam = float(self.rng.beta(self.alpha, self.alpha))
        point = int(self.points[self.rng.integers(len(self.points))])
        perm = torch.from_numpy(self.rng.permutation(batch_size)).to(device, non_blocking=True)
        # host -> device without a stream sync (a blocking copy would wait for the GPU every step)
        self.mixer.lam = torch.tensor(lam, device="cpu").to(device, non_blocking=True)
        self.mixer.perm = perm
        return point, self.mixer.lam, perm, lam

    def criterion(self, logits: Tensor, y: Tensor, y_perm: Tensor, lam: Tensor) -> Tensor:
        logits = logits.float()
        if self.loss == "bce":
            k = logits.shape[1]
            target = lam * F.one_hot(y, k).float() + (1 - lam) * F.one_hot(y_perm, k).float()
            return softmax_bce(logits, target)
        return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y_perm)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
