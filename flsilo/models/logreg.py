"""``logreg``: multinomial logistic regression (flatten, one linear layer)."""

from __future__ import annotations

import math

from torch import nn


def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
