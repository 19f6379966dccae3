"""Half-precision models for tests, as a plug-in spec: ``tests.half_models:linear:dtype=float16``."""

from __future__ import annotations

import math

import torch
from torch import nn


class HalfLinear(nn.Module):
    """A linear classifier whose weights are stored (and so shipped) in float16 or bfloat16."""

    def __init__(self, features: int, classes: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1).to(self.linear.weight.dtype)).float()


def linear(input_shape: tuple[int, ...], num_classes: int, dtype: str = "bfloat16") -> nn.Module:
    return HalfLinear(math.prod(input_shape), num_classes, getattr(torch, dtype))
