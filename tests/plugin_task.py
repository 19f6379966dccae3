"""A task plug-in: classification with label smoothing (``--task tests.plugin_task:TASK``).

The example of docs/how-to/plugin-task.md, kept here so a test runs it (and checks that the
page shows this code).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from flsilo.tasks.classify import Classify


class SmoothClassify(Classify):
    """Single-label classification whose loss spreads 10% of each target over the others."""

    name = "tests.plugin_task:TASK"
    smoothing = 0.1

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
        return F.cross_entropy(model(x), y, reduction=reduction, label_smoothing=self.smoothing)


TASK = SmoothClassify()
