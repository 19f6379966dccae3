"""``resnet``: a small pre-activation-free ResNet with GroupNorm instead of BatchNorm.

GroupNorm keeps no running statistics, so nothing site-specific hides in buffers and
averaging weights is all there is to aggregate (Hsieh et al., "The Non-IID Data Quagmire
of Decentralized Machine Learning", ICML 2020, recommend it for federated training).
"""

from __future__ import annotations

from torch import Tensor, nn


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout, groups)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(cout, groups)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, width: int, blocks: int, groups: int
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), _norm(width, groups), nn.ReLU()
        )
        stages: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, width * 2, width * 4)):
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                stages.append(BasicBlock(cin, cout, stride, groups))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    blocks: int = 1,
    groups: int = 8,
) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError("resnet needs an image input shape C,H,W")
    return ResNet(input_shape[0], num_classes, width, blocks, groups)
