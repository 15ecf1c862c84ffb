"""Pre-activation ResNets for 32x32 inputs, as in the manifold mixup reference code (Verma et al.
2018) that the paper modified (section 6.1): a 3x3 stem 3->64, four stages at 64/128/256/512
planes (strides 1/2/2/2), no final norm before pooling, linear classifier.

``final_norm=True`` adds a norm-ReLU before pooling, as the paper's WRN and BiT's ResNetV2 have.
Weight Standardization needs it (``norm=ws_gn``): its kernels have variance 1, not He's
``2/fan``, so without it the classifier reads a residual stream about ``sqrt(fan)`` times larger,
and the demo's PreActResNet-18 diverges or stays at chance at every lr from 0.003 to 0.1
(docs/spec.md section 2).

PreActResNet-152 ([3, 8, 36, 3] bottlenecks) is the paper's CIFAR network (58.1m parameters;
58,144,842 with BatchNorm and 10 classes); 18/34 (basic blocks) and 50/101 come for free.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from equinorm.models.base import StagedNet
from equinorm.models.blocks import PreActBasicBlock, PreActBottleneck, make_stages, scaled

DEPTHS = {
    18: (PreActBasicBlock, (2, 2, 2, 2)),
    34: (PreActBasicBlock, (3, 4, 6, 3)),
    50: (PreActBottleneck, (3, 4, 6, 3)),
    101: (PreActBottleneck, (3, 4, 23, 3)),
    152: (PreActBottleneck, (3, 8, 36, 3)),
}


class PreActResNet(StagedNet):
    def __init__(
        self,
        conv,
        norm,
        depth: int = 18,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        block, depths = DEPTHS[depth]
        widths = [scaled(w, width_mult) for w in (64, 128, 256, 512)]
        self.stem = conv(in_channels, widths[0], 3, stride=1, padding=1)
        stages, ch = make_stages(block, widths[0], widths, depths, conv, norm)
        self.stages = nn.ModuleList(stages)
        self.norm = norm(ch) if final_norm else None
        self.fc = nn.Linear(ch, num_classes)

    def forward_head(self, x: Tensor) -> Tensor:
        if self.norm is not None:
            x = F.relu(self.norm(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
