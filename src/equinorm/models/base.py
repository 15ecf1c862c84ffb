"""What every network in the suite exposes: stem -> stages -> head, and a hook after stage k.

Manifold mixup (Verma et al. 2018; paper section 6) mixes hidden states at a random point among
{input, after stage 1, after stage 2}. The models know nothing about mixup: ``forward`` takes an
optional ``hook`` applied at point ``hook_at`` (0 = the input, k = after stage k). Going through
``forward`` (rather than calling the stages from outside) keeps DDP's gradient hooks working.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["StagedNet"]


class StagedNet(nn.Module):
    """Base class: subclasses implement ``forward_head``, and ``forward_stem``/``stage_modules``
    unless they keep their stem in ``self.stem`` and their stages in ``self.stages``."""

    #: hook points the trainer may pick for manifold mixup: input, after stage 1, after stage 2
    mix_points: tuple[int, ...] = (0, 1, 2)

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.stem(x)

    def stage_modules(self) -> list[nn.Module]:
        return list(self.stages)

    def forward_head(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        hook_at: int | None = None,
        hook: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        if isinstance(hook_at, torch.fx.Proxy):  # torch.fx tracing (feature extractors): no mixup
            hook_at = hook = None
        if hook_at == 0:
            x = hook(x)
        x = self.forward_stem(x)
        for k, stage in enumerate(self.stage_modules(), start=1):
            x = stage(x)
            if hook_at == k:
                x = hook(x)
        return self.forward_head(x)

    def residual_scales(self) -> list[nn.Module]:
        """The norm that closes each residual branch (for zero-init); empty if there is none."""
        return [m.residual_scale for m in self.modules() if getattr(m, "residual_scale", None)]
