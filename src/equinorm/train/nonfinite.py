"""Where a diverged run's first non-finite value came from: a layer's output or its gradients.

The training loop looks for a non-finite loss only every few steps (a host sync); by then every
weight is NaN and the forward pass says nothing. :class:`NonFiniteProbe` watches one step
replayed from a finite state: forward hooks on every leaf module record, on the device, whether
its output is finite; after the backward pass the parameters' gradients are checked too. The
first module in forward order with a non-finite output is where the forward pass broke; when the
forward pass stayed finite, the deepest module with a non-finite gradient is where the backward
pass did. For an EquiNorm layer the probe adds the smallest ``|D|`` of the step (the denominator
of paper section 4's scale; 0 means a channel's positive weights met only dead inputs, or, in the
single-pass form, that every weight of a channel has one sign: paper 5.2). :func:`account` puts
those fields in one line.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equinorm.layers.equiconv import EquiConv2d, equi_denominator, input_channel_means


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not any(m.children())]


def smallest_denominator(conv: EquiConv2d, x: Tensor) -> Tensor:
    """``min_d |D_d|`` of an EquiNorm layer for input ``x`` (batch statistics), on the device."""
    means = input_channel_means(x.detach().float(), conv.stat_fraction)
    d = equi_denominator(conv.weight.detach(), means, conv.single_pass, conv.groups, conv.eps)
    return d.abs().min()


class NonFiniteProbe:
    """Forward hooks that record each leaf module's output finiteness per call (no host sync per
    module), and for each EquiNorm call its smallest ``|D|`` -- of that very call, so that with
    virtual devices (several forward passes per step) the micro-batch that broke is the one read.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.order: list[str] = []
        self.flags: list[Tensor] = []
        self.denominators: dict[int, Tensor] = {}  # call index -> min |D| of that call
        self.first: int | None = None  # call index of the first non-finite output
        self._handles = []
        for name, module in _leaves(model):
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if isinstance(output, Tensor) and output.is_floating_point():
                if isinstance(module, EquiConv2d):
                    self.denominators[len(self.order)] = smallest_denominator(module, inputs[0])
                self.order.append(name)
                self.flags.append(torch.isfinite(output.detach()).all())

        return hook

    def reset(self) -> None:
        self.order, self.flags, self.denominators, self.first = [], [], {}, None

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> NonFiniteProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def first_nonfinite_output(self) -> str | None:
        if not self.flags:
            return None
        finite = torch.stack(self.flags).tolist()
        self.first = next((i for i, ok in enumerate(finite) if not ok), None)
        return None if self.first is None else self.order[self.first]

    def deepest_nonfinite_grad(self) -> str | None:
        modules = dict(_leaves(self.model))
        bad = None
        for name in dict.fromkeys(self.order):  # forward order, each module once
            grads = [p.grad for p in modules[name].parameters(recurse=False) if p.grad is not None]
            if any(not bool(torch.isfinite(g).all()) for g in grads):
                bad = name
        return bad

    def describe(self, name: str, where: str) -> dict:
        """Summary fields for ``name``; an EquiNorm layer adds its smallest ``|D|`` -- of the
        non-finite call (forward), else the smallest over the step's calls (backward)."""
        module = dict(_leaves(self.model))[name]
        info = {"nonfinite_layer": f"{name} ({type(module).__name__})", "nonfinite_in": where}
        if isinstance(module, EquiConv2d):
            calls = [i for i, n in enumerate(self.order) if n == name and i in self.denominators]
            if where == "forward" and self.first in self.denominators:
                calls = [self.first]
            if calls:
                d = torch.stack([self.denominators[i] for i in calls]).min()
                info["nonfinite_min_abs_D"] = float(d)
        return info


def account(fields: dict) -> str:
    """Where a diverged run's first non-finite value appeared, in words, from its ``nonfinite_*``
    summary fields (the trainer's warning and a smoke run's error say the same)."""
    text = fields.get("nonfinite_layer") or "not located"
    if fields.get("nonfinite_in"):
        text += f" in the {fields['nonfinite_in']} pass"
    d = fields.get("nonfinite_min_abs_D")
    if d == 0:
        text += (
            ", where EquiNorm's denominator D is 0: the paper's transform has no epsilon, "
            "norm.eps=1e-6 avoids it (docs/spec.md section 1)"
        )
    elif d is not None:
        text += f", smallest |D| {d:.3g}"
    return text
