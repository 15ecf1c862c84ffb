"""``torch.compile`` in one of its modes (``train.compile_mode``; the benchmark's ``--modes``).

The modes that replay CUDA graphs (reduce-overhead, max-autotune) overwrite a replay's outputs
with the next one's, so each call is marked as a new step: every forward of the trainer (a step's,
each micro-batch's, an evaluation batch's) and of the benchmark is done with its outputs before
the next begins. docs/performance.md: on an H200 they made the paper's WRN step 2.5x faster.
"""

from __future__ import annotations

import torch

GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs


def compiled(model: torch.nn.Module, mode) -> torch.nn.Module:
    """``torch.compile(model)`` in ``mode``: torch's name, or the config's (``_`` for ``-``, a
    str-Enum or a string)."""
    name = str(getattr(mode, "value", mode)).replace("_", "-")
    out = torch.compile(model, mode=name)
    if name in GRAPH_MODES:
        out.register_forward_pre_hook(lambda m, args: torch.compiler.cudagraph_mark_step_begin())
    return out
