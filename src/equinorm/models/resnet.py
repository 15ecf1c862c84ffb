"""The standard ImageNet ResNet-50 (He et al. 2016b; paper section 6.4), torchvision-compatible.

Post-activation bottlenecks [3, 4, 6, 3] (v1.5, stride on the 3x3), 7x7 stride-2 stem and max-pool,
global average pool and a linear classifier. Attribute names follow torchvision's ``resnet50``, so
with ``bn`` its state_dict has the same keys and shapes and torchvision checkpoints load.
``small_input=True`` swaps the stem for a 3x3 stride-1 conv without max-pool (for 8x8 or 32x32
images in tests and demos).
"""

from __future__ import annotations

from torch import Tensor, nn

from equinorm.models.base import StagedNet
from equinorm.models.blocks import Bottleneck, make_stages, scaled


class ResNet(StagedNet):
    def __init__(
        self,
        conv,
        norm,
        depths: tuple[int, ...] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_channels: int = 3,
        width_mult: float = 1.0,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        widths = [scaled(w, width_mult) for w in (64, 128, 256, 512)]
        if small_input:
            self.conv1 = conv(in_channels, widths[0], 3, stride=1, padding=1)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = conv(in_channels, widths[0], 7, stride=2, padding=3)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = norm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, ch = make_stages(Bottleneck, widths[0], widths, depths, conv, norm)
        for i, stage in enumerate(stages, start=1):  # torchvision's names: layer1 ... layer4
            setattr(self, f"layer{i}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stage_modules(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(x).flatten(1))
