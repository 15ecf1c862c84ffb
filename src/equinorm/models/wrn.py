"""The paper's wide ResNet (section 6.1): "non-bottleneck wide ResNet with 20 convolutions, 96
initial planes after first convolution and 9.7m parameters" (docs/spec.md section 3).

Pre-activation; a 3x3 stem 3->96; three stages of three basic blocks at widths 96/192/384 with
strides 1/2/2 and 1x1 projection shortcuts where the shape changes; final norm-ReLU, global average
pool, linear. With BatchNorm and 10 classes: 9,728,362 parameters.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from equinorm.models.base import StagedNet
from equinorm.models.blocks import PreActBasicBlock, make_stages, scaled


class WideResNet(StagedNet):
    def __init__(
        self,
        conv,
        norm,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, ...] = (96, 192, 384),
        depths: tuple[int, ...] = (3, 3, 3),
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        widths = tuple(scaled(w, width_mult) for w in widths)
        self.stem = conv(in_channels, widths[0], 3, stride=1, padding=1)
        stages, ch = make_stages(PreActBasicBlock, widths[0], widths, depths, conv, norm)
        self.stages = nn.ModuleList(stages)
        self.norm = norm(ch)
        self.fc = nn.Linear(ch, num_classes)

    def forward_head(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
