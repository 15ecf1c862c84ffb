"""SGD with momentum and weight decay (paper 6.1); an optional no-decay rule keyed on tensor rank.

By default every parameter is decayed, as in the paper and its reference code. With
``no_decay_max_rank >= 0`` the parameters of rank <= that value (biases, norm scales and shifts,
WN gains: all rank 1) get no decay; kernels and the classifier matrix keep it. The rank rule
cannot silently skip a new norm's parameters, as a rule on class names would.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from equinorm.errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float, no_decay_max_rank: int) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= no_decay_max_rank else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: Mapping, lr: float, momentum: float):
    if cfg["name"] != "sgd":
        raise ConfigError(f"optim.name={cfg['name']!r} is not one of sgd")
    if cfg["weight_decay"] < 0:
        raise ConfigError(f"optim.weight_decay={cfg['weight_decay']} must be >= 0")
    groups = param_groups(model, float(cfg["weight_decay"]), int(cfg["no_decay_max_rank"]))
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(cfg["nesterov"]))


def set_lr_momentum(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["momentum"] = momentum
