"""The one normalization seam (README, "One seam"): a norm name -> a (conv_layer, norm_layer) pair.

Models take the two factories and never name a concrete norm class:
``conv_layer(in_ch, out_ch, kernel_size, stride=..., padding=...)`` and
``norm_layer(num_channels)``.
Stem, block and shortcut convolutions all go through the same factories.

=========  ================================  =========================================
name       conv_layer                        norm_layer
=========  ================================  =========================================
equi       EquiConv2d (paper section 4)      ChannelAffine (per-channel scale & shift)
bn         Conv2d                            BatchNorm2d
gn         Conv2d                            GroupNorm(32 groups)
ws_gn      StdConv2d (weight standardized)   GroupNorm(32 groups)  -- BiT
wn         WNConv2d (weight normalized)      MeanOnlyBatchNorm2d   -- Salimans & Kingma 5.1
none       Conv2d                            Identity
=========  ================================  =========================================

Other packages add norms through the entry-point group ``equinorm.norms`` (``name =
"module:factory"``, the factory returning a :class:`NormSpec`): every process that asks for the
name -- a SLURM job, a torchrun rank, ``equinorm-evaluate`` -- loads it (docs/runs.md).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from torch import nn

from equinorm.layers.affine import ChannelAffine, GroupNorm, MeanOnlyBatchNorm2d
from equinorm.layers.equiconv import EquiConv2d
from equinorm.layers.peers import StdConv2d, WNConv2d

__all__ = ["ENTRY_POINTS", "NORMS", "NormSpec", "get_norm"]


@dataclass(frozen=True)
class NormSpec:
    """What a norm name supplies to a model."""

    name: str
    conv_layer: Callable[..., nn.Module]
    norm_layer: Callable[[int], nn.Module]
    standardize_input: bool  # per-channel mean/std input normalization (False: pixels in [0, 1])


def _spec(name, conv_cls, norm_factory, standardize_input=True, **conv_options) -> NormSpec:
    conv = functools.partial(conv_cls, bias=False, **conv_options)
    return NormSpec(name, conv, norm_factory, standardize_input)


def _equi(
    single_pass=True, stat_fraction=1.0, momentum=0.1, detach_stats=False, eps=0.0, impl="fused"
) -> NormSpec:
    options = {
        "single_pass": single_pass,
        "stat_fraction": stat_fraction,
        "momentum": momentum,
        "detach_stats": detach_stats,
        "eps": eps,
        "impl": impl,
    }
    # The paper removes input pre-normalization with EquiNorm (section 5.2).
    return _spec("equi", EquiConv2d, ChannelAffine, standardize_input=False, **options)


def _bn(momentum=0.1) -> NormSpec:
    if momentum is not None and not 0.0 < momentum <= 1.0:  # torch takes any: -1 runs stats away
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")  # None: torch's average
    return _spec("bn", nn.Conv2d, functools.partial(nn.BatchNorm2d, momentum=momentum))


def _gn(groups=32) -> NormSpec:
    return _spec("gn", nn.Conv2d, functools.partial(GroupNorm, num_groups=groups))


def _ws_gn(groups=32, eps=1e-6) -> NormSpec:
    return _spec("ws_gn", StdConv2d, functools.partial(GroupNorm, num_groups=groups), eps=eps)


def _wn(momentum=0.1) -> NormSpec:
    return _spec("wn", WNConv2d, functools.partial(MeanOnlyBatchNorm2d, momentum=momentum))


def _none() -> NormSpec:
    return _spec("none", nn.Conv2d, lambda num_channels: nn.Identity())


NORMS: dict[str, Callable[..., NormSpec]] = {
    "equi": _equi,
    "bn": _bn,
    "gn": _gn,
    "ws_gn": _ws_gn,
    "wn": _wn,
    "none": _none,
}


#: the entry-point group of the norms other packages provide
ENTRY_POINTS = "equinorm.norms"


def get_norm(name: str, **options) -> NormSpec:
    """The (conv_layer, norm_layer) pair for ``name``; ``options`` go to that norm's layers.

    Raises:
        KeyError: unknown name (the message lists the valid ones).
        TypeError: an option that this norm does not take (the message lists the valid ones).
    """
    if name not in NORMS:
        plugins = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINTS)}
        if name not in plugins:
            valid = [*NORMS, *sorted(set(plugins) - set(NORMS))]
            raise KeyError(f"unknown norm {name!r}; valid norms: {', '.join(valid)}")
        try:
            NORMS[name] = plugins[name].load()
        except Exception as exc:  # the package's problem, in one line
            where = plugins[name].value
            raise KeyError(f"norm {name!r} ({where}) cannot be loaded: {exc!r}") from exc
    factory = NORMS[name]
    valid = list(inspect.signature(factory).parameters)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise TypeError(
            f"norm {name!r} takes no option(s) {', '.join(bad)}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return factory(**options)
