"""The paper's Figure 1 as a diagnostic: positive vs negative weight contributions per layer.

For every convolution of the model, on a fixed batch: the total output of its positive weights
alone and of its negative weights alone, divided by the number of output elements. EquiNorm holds
these at +1 and -1 (exactly with cyclic padding and stride 1, approximately otherwise) through
training; a BatchNorm net's raw kernels drift. EquiNorm layers are evaluated with the batch's own
statistics (what training sees), without touching their running estimates.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from equinorm.layers.equiconv import (
    EquiConv2d,
    equi_weight,
    input_channel_means,
)


def _effective_weight(module: nn.Conv2d, x: Tensor) -> Tensor:
    if isinstance(module, EquiConv2d):
        factor = module.scale_factor(x)
        means = input_channel_means(x, module.stat_fraction)
        return equi_weight(
            module.weight, means, factor, module.single_pass, module.groups, module.eps
        )
    for name in ("standardized_weight", "normalized_weight"):  # weight-space peers
        fn = getattr(module, name, None)
        if callable(fn):
            return fn()
    return module.weight


def _hook(module, inputs, output, *, name: str, records: list) -> None:
    x = inputs[0].float()
    w = _effective_weight(module, x).float()
    pos = module._conv_forward(x, w.clamp(min=0), None).sum()
    neg = module._conv_forward(x, w.clamp(max=0), None).sum()
    n = output.numel()
    records.append({"layer": name, "positive": pos / n, "negative": neg / n})


@torch.no_grad()
def equilibrium_stats(model: nn.Module, x: Tensor) -> list[dict]:
    """One record per convolution: ``layer``, ``positive``, ``negative`` (per output element)."""
    records: list[dict] = []
    handles = [
        m.register_forward_hook(functools.partial(_hook, name=name, records=records))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [{k: (float(v) if k != "layer" else v) for k, v in r.items()} for r in records]
