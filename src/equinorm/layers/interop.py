"""EquiConv2d in other people's models (the layer: docs/spec.md section 1): timm's ``conv_layer``
protocol, converting a trained network's plain convolutions, and calibrating the running means
that evaluation uses.

    model = timm.create_model("resnetv2_18", conv_layer=TimmEquiConv2d)
    convert_to_equinorm(torchvision.models.resnet18(weights=...), calibrate_on=loader, batches=20)

FX tracing (torchvision's and timm's feature extractors), ``torch.jit.trace`` and strict loads of
plain ``Conv2d`` checkpoints work on the layer itself (:mod:`equinorm.layers.equiconv`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from equinorm.layers.equiconv import EquiConv2d, balance_signs_

__all__ = ["TimmEquiConv2d", "calibrate", "convert_to_equinorm"]


def symmetric_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's ``get_padding``: the padding that keeps a stride-1 output the input's size."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class TimmEquiConv2d(EquiConv2d):
    """EquiConv2d with timm's ``conv_layer`` defaults (those of its ``StdConv2d``): ``padding``
    None is symmetric padding, no bias -- ``timm.create_model(name, conv_layer=TimmEquiConv2d)``.
    Extra keyword arguments are EquiConv2d's (``single_pass``, ``stat_fraction``, ...)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        **kwargs,
    ) -> None:
        if padding is None:
            padding = symmetric_padding(kernel_size, stride, dilation)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            **kwargs,
        )


@torch.no_grad()
def convert_to_equinorm(
    model: nn.Module,
    calibrate_on: Iterable | None = None,
    batches: int = 10,
    where: Callable[[str, nn.Conv2d], bool] | None = None,
    **options,
) -> int:
    """Replace every plain ``nn.Conv2d`` of ``model`` by an :class:`EquiConv2d` of the same
    geometry holding its weights (signs balanced where a kernel slice has one sign: EquiNorm's
    denominator needs both), in place; returns how many. EquiNorm renormalizes each kernel, so
    the network computes something else until fine-tuned; with ``calibrate_on`` (batches of
    inputs, or (input, target) pairs) the running means are measured first (:func:`calibrate`).
    ``where(name, conv)``: convert only the convolutions it accepts, by qualified name (e.g. not
    squeeze-excitation's, whose input channels can be all zero: EquiNorm's denominator too).
    ``options`` go to EquiConv2d (``single_pass``, ``stat_fraction``, ``momentum``, ``eps``...)."""
    converted = 0
    for prefix, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Conv2d:  # subclasses (peers, EquiConv2d) keep what they are
                continue
            if where is not None and not where(f"{prefix}.{name}" if prefix else name, child):
                continue
            layer = EquiConv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                child.stride,
                child.padding,
                child.dilation,
                child.groups,
                child.bias is not None,
                child.padding_mode,
                device=child.weight.device,
                dtype=child.weight.dtype,
                **options,
            )
            layer.weight.copy_(child.weight)
            balance_signs_(layer.weight)
            if child.bias is not None:
                layer.bias.copy_(child.bias)
            setattr(parent, name, layer.train(child.training))
            converted += 1
    if calibrate_on is not None:
        calibrate(model, calibrate_on, batches)
    return converted


@torch.no_grad()
def calibrate(model: nn.Module, data: Iterable, batches: int = 10) -> int:
    """Set every EquiConv2d's running means to the average of its batch means over the first
    ``batches`` batches of ``data`` (the rest of the model in eval mode: BatchNorm statistics and
    dropout untouched); returns the batches seen. Needed after loading plain weights, and after
    any change of the weights that the running means should follow."""
    layers = [m for m in model.modules() if isinstance(m, EquiConv2d)]
    sums = {m: torch.zeros_like(m.running_mean) for m in layers}

    def add(layer: nn.Module, args, out) -> None:  # a hook returning a value would replace out
        sums[layer].add_(layer.running_mean)

    hooks = [m.register_forward_hook(add) for m in layers]
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    model.eval()
    seen = 0
    try:
        for layer in layers:  # each batch's own means: momentum 1 replaces the estimate
            layer.train()
            layer.momentum = 1.0
        device = next(model.parameters()).device
        for seen, batch in enumerate(data, start=1):
            x = batch[0] if isinstance(batch, list | tuple) else batch
            model(x.to(device))
            if seen >= batches:
                break
    finally:
        for h in hooks:
            h.remove()
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    for layer in layers if seen else []:
        layer.running_mean.copy_(sums[layer] / seen)
    names = {m: name for name, m in model.named_modules()}
    signed = [names[m] or "the model" for m in layers if seen and (m.running_mean < 0).any()]
    if signed:  # standardized images into a converted stem: the denominator crosses zero
        more = f" and {len(signed) - 3} more" if len(signed) > 3 else ""
        warnings.warn(
            f"EquiConv2d inputs with channel means below 0 ({', '.join(signed[:3])}{more}): "
            "EquiNorm assumes inputs >= 0 (pixels in [0, 1] or a ReLU's output; paper 5.2), and "
            "its denominator crosses zero with signed ones; feed [0, 1] pixels (no "
            "standardization), or leave those layers out (convert_to_equinorm's where=)",
            stacklevel=2,
        )
    return seen
