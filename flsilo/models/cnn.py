"""``cnn``: the FedAvg paper's CNN (two 5x5 convs with max-pooling, one dense layer).

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017. Generalised to any C,H,W input: convolutions keep the spatial size
(padding 2), each pooling halves it (rounding up), so small images such as 8x8 work.
"""

from __future__ import annotations

from torch import nn


def _pooled(size: int) -> int:
    return (size + 1) // 2 if size > 1 else 1


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: int | tuple[int, ...] = (32, 64),
    hidden: int = 512,
) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError("cnn needs an image input shape C,H,W")
    if isinstance(channels, int):
        channels = (channels,)
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in channels:
        pool = (2 if h > 1 else 1, 2 if w > 1 else 1)
        layers += [
            nn.Conv2d(c, out, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(pool, ceil_mode=True),
        ]
        c, h, w = out, _pooled(h), _pooled(w)
    layers += [
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]
    return nn.Sequential(*layers)
