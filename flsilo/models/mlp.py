"""``mlp``: fully connected ReLU network; ``hidden=200x200`` is the FedAvg paper's 2NN."""

from __future__ import annotations

import math

from torch import nn


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int | tuple[int, ...] = (200, 200),
    dropout: float = 0.0,
) -> nn.Module:
    if isinstance(hidden, int):
        hidden = (hidden,)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
