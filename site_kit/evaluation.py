"""Loss, accuracy, per-class accuracy and confusion matrix of a model on a dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from flsilo.manifest import Metrics
from site_kit.data import Dataset
from site_kit.data.samples import Samples
from site_kit.data.stream import batches, in_order


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    samples: int
    per_class_accuracy: tuple[float | None, ...]
    confusion: tuple[tuple[int, ...], ...]

    def metrics(self) -> Metrics:
        return Metrics(loss=self.loss, accuracy=self.accuracy, samples=self.samples)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: Dataset | Samples,
    num_classes: int,
    device: torch.device,
    batch_size: int = 1024,
    workers: int = 0,
    scores: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Evaluation:
    """Score ``model`` on every sample of ``data`` in order (no augmentation).

    With ``scores``, each batch's class probabilities (float64) and targets are appended to
    it, for the figures of ``flsilo.metrics`` (one pass over the data serves both)."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    total_loss = 0.0
    for cpu_x, cpu_y in batches(data, in_order(len(data), batch_size), workers=workers):
        xb, yb = cpu_x.to(device), cpu_y.to(device)
        logits = model(xb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        pred = logits.argmax(dim=1).cpu()
        if scores is not None:
            scores.append(
                (torch.softmax(logits.double(), dim=1).cpu().numpy(), cpu_y.numpy().copy())
            )
        confusion += torch.bincount(
            yb.cpu() * num_classes + pred, minlength=num_classes * num_classes
        ).reshape(num_classes, num_classes)
    model.train(was_training)
    n = len(data)
    correct = int(confusion.diag().sum())
    per_class = tuple(
        (int(confusion[c, c]) / int(row_total)) if (row_total := confusion[c].sum()) else None
        for c in range(num_classes)
    )
    return Evaluation(
        loss=total_loss / n if n else 0.0,
        accuracy=correct / n if n else 0.0,
        samples=n,
        per_class_accuracy=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion.tolist()),
    )
