"""Parameter counts and forward MACs per architecture x norm (pycls's model_complexity habit).

The golden file ``tests/golden/model_complexity.json`` pins the counts, so any drift in an
architecture shows up in the tests; ``scripts/model_complexity.py`` regenerates it and the README
table.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from equinorm.layers.norms import NORMS
from equinorm.models.registry import ARCHS, build_model, count_parameters

#: (num_classes, input size) at paper size: CIFAR-style nets see 32x32, ResNet-50 ImageNet 224x224.
PAPER_SETTINGS = {arch: (10, 32) for arch in ARCHS} | {"resnet50": (1000, 224)}


def parameter_counts() -> dict[str, dict[str, int]]:
    """Parameters of every arch x norm at paper size (built on the meta device: no memory)."""
    out: dict[str, dict[str, int]] = {}
    with torch.device("meta"):
        for arch, (classes, _) in PAPER_SETTINGS.items():
            out[arch] = {n: count_parameters(build_model(arch, n, classes)) for n in NORMS}
    return out


def forward_macs(
    arch: str, norm: str = "bn", num_classes: int | None = None, size: int | None = None, **options
) -> int:
    """Multiply-accumulates of one forward pass of one image (convs + linear): at paper size, or
    at ``size`` pixels with ``num_classes`` and the architecture ``options`` (``width_mult``,
    ``in_channels``) of a run."""
    classes, paper_size = PAPER_SETTINGS[arch]
    size = size or paper_size
    with torch.device("meta"):  # weights without memory; FlopCounterMode counts meta tensors
        model = build_model(arch, norm, num_classes or classes, **options).eval()
        x = torch.empty(1, options.get("in_channels", 3), size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2
