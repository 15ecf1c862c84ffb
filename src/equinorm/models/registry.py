"""The architecture registry (pycls's builders habit): a visible dict and one entry point.

``build_model(arch, norm, num_classes)`` builds any architecture in any normalization through the
seam and initialises it (He fan_out, balanced EquiNorm signs); a lookup miss names the bad key and
lists the valid ones.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from torch import nn

from equinorm.layers.norms import NormSpec, get_norm
from equinorm.models.base import StagedNet
from equinorm.models.fold import fold_affines
from equinorm.models.init import init_weights
from equinorm.models.preact_resnet import PreActResNet
from equinorm.models.resnet import ResNet
from equinorm.models.wrn import WideResNet

__all__ = ["ARCHS", "build_model"]

ARCHS: dict[str, Callable[..., StagedNet]] = {
    "wrn": WideResNet,
    "preact_resnet18": functools.partial(PreActResNet, depth=18),
    "preact_resnet34": functools.partial(PreActResNet, depth=34),
    "preact_resnet50": functools.partial(PreActResNet, depth=50),
    "preact_resnet101": functools.partial(PreActResNet, depth=101),
    "preact_resnet152": functools.partial(PreActResNet, depth=152),
    "resnet50": ResNet,
}

_FIXED = {"conv", "norm", "depth", "depths", "widths"}


def arch_options(arch: str) -> list[str]:
    """Keyword options that ``arch`` takes beyond (conv, norm)."""
    if arch not in ARCHS:
        raise KeyError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    fn = ARCHS[arch]
    target = fn.func if isinstance(fn, functools.partial) else fn
    return [p for p in inspect.signature(target).parameters if p not in _FIXED | {"self"}]


def build_model(
    arch: str,
    norm: str | NormSpec = "bn",
    num_classes: int = 10,
    *,
    zero_init_residual: bool = False,
    norm_options: dict | None = None,
    fold_affine: bool = True,
    **options,
) -> StagedNet:
    """Build and initialise ``arch`` with normalization ``norm``.

    Args:
        arch: a key of :data:`ARCHS`.
        norm: a norm name of the seam (``equi``, ``bn``, ``gn``, ``ws_gn``, ``wn``, ``none``) or a
            ready :class:`NormSpec`.
        num_classes: classifier outputs.
        zero_init_residual: zero the scale closing each residual branch (resnet50 only).
        norm_options: options for the norm's layers (e.g. ``{"stat_fraction": 0.25}``).
        fold_affine: apply each per-channel affine that directly follows an EquiNorm conv inside
            that conv (same function and state_dict; see :mod:`equinorm.models.fold`).
        **options: architecture options: ``in_channels``, ``width_mult`` and, for resnet50,
            ``small_input``.
    """
    valid = arch_options(arch)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise TypeError(
            f"arch {arch!r} takes no option(s) {', '.join(bad)}; valid options: {', '.join(valid)}"
        )
    spec = norm if isinstance(norm, NormSpec) else get_norm(norm, **(norm_options or {}))
    model = ARCHS[arch](spec.conv_layer, spec.norm_layer, num_classes=num_classes, **options)
    init_weights(model, zero_init_residual=zero_init_residual)
    if fold_affine:
        fold_affines(model)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
