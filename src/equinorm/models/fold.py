"""Fold each per-channel affine that directly follows a convolution into that convolution.

EquiNorm's affine (paper section 4) right after an EquiNorm convolution is a per-output-channel
scale and shift: the convolution can apply it inside its weight transform (scale the kernel, add
the shift as its bias), which removes an activation-sized pass forward and backward. The pass
traces the model (torch.fx, treating every module without children as a leaf) and folds wherever a
module offering ``fold_affine`` feeds, and only feeds, a module marked ``foldable`` -- a protocol,
not class names, so models and other norms are untouched. Parameters stay where they are, so
state_dicts are the same with and without folding.
"""

from __future__ import annotations

from collections import Counter

from torch import fx, nn


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return next(iter(m.children()), None) is None or super().is_leaf_module(m, qualname)


def fold_affines(model: nn.Module) -> int:
    """Fold every eligible (conv, affine) pair of ``model`` in place; returns how many."""
    candidates = [m for m in model.modules() if callable(getattr(m, "fold_affine", None))]
    if not candidates:
        return 0
    graph = _LeafTracer().trace(model, concrete_args={"hook_at": None, "hook": None})
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        conv = modules[node.target]
        users = list(node.users)
        if not callable(getattr(conv, "fold_affine", None)) or getattr(conv, "bias", 0) is not None:
            continue
        if len(users) != 1 or users[0].op != "call_module" or calls[users[0].target] != 1:
            continue
        affine = modules[users[0].target]
        if getattr(affine, "foldable", False) and not affine.folded:
            conv.fold_affine(affine)
            folded += 1
    return folded
