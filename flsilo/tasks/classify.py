"""``classify``: one class per sample, cross-entropy, top-1 accuracy (the default task).

The targets are class indices, stored in the index as the record's ``index``; the loss,
the batches and the figures are exactly those flsilo computed before tasks existed, so
classification bundles keep their bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flsilo.plans.plan import CLASSIFY, TaskSpec
from flsilo.scoring.metrics import classification_report
from flsilo.tasks.base import Evaluation, Evaluator, LabelError, Target, Task

if TYPE_CHECKING:
    import torch

LABEL_COLUMN = "label"


class Classify(Task):
    name = CLASSIFY
    primary_metric = "accuracy"
    closed_form = True
    supports_dp = True
    formats = ("imagefolder", "csv", "images-csv", "npz", "dicom", "video")

    def label_columns(self, spec: TaskSpec, classes: tuple[str, ...]) -> tuple[str, ...]:
        del spec, classes
        return (LABEL_COLUMN,)

    def parse(self, cells: Sequence[str], spec: TaskSpec, classes: tuple[str, ...]) -> Target:
        del spec
        label = cells[0].strip()
        if label not in classes:
            raise LabelError(
                f"label {label!r} is not a class of this federation ({', '.join(classes)})"
            )
        return Target(classes.index(label))

    def decode(self, target: Target) -> np.ndarray:
        return np.asarray(target.index, dtype=np.int64)

    def counts(self, targets: np.ndarray, classes: tuple[str, ...]) -> list[int]:
        return list(np.bincount(targets, minlength=len(classes)).tolist())

    def collate(self, targets: Sequence[np.ndarray]) -> Any:
        import torch

        return torch.tensor([int(t) for t in targets], dtype=torch.int64)

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(model(x), y, reduction=reduction)

    def evaluator(self, classes: tuple[str, ...], spec: TaskSpec) -> Evaluator:
        del spec
        return ClassifyEvaluator(classes)

    def target_matrix(self, y: np.ndarray, k: int) -> np.ndarray:
        onehot = np.zeros((len(y), k))
        onehot[np.arange(len(y)), y] = 1.0
        return onehot


class ClassifyEvaluator(Evaluator):
    """Summed cross-entropy, the confusion matrix and the class probabilities."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        import torch

        self.classes = classes
        k = len(classes)
        self.confusion = torch.zeros(k, k, dtype=torch.int64)
        self.total_loss = 0.0
        self.n = 0
        self.scores: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, model: torch.nn.Module, x: torch.Tensor, y: Any) -> None:
        import torch
        import torch.nn.functional as F

        k = len(self.classes)
        logits = model(x)
        self.total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        pred = logits.argmax(dim=1).cpu()
        cpu_y = y.cpu()
        self.scores.append(
            (torch.softmax(logits.double(), dim=1).cpu().numpy(), cpu_y.numpy().copy())
        )
        self.confusion += torch.bincount(cpu_y * k + pred, minlength=k * k).reshape(k, k)
        self.n += len(y)

    def finish(self, *, bootstrap_seed: int | None = None) -> Evaluation:
        confusion, n, k = self.confusion, self.n, len(self.classes)
        correct = int(confusion.diag().sum())
        per_class = tuple(
            (int(confusion[c, c]) / int(row_total)) if (row_total := confusion[c].sum()) else None
            for c in range(k)
        )
        accuracy = correct / n if n else 0.0
        figures = None
        if bootstrap_seed is not None:
            proba = np.concatenate([p for p, _ in self.scores]) if self.scores else np.zeros((0, k))
            targets = (
                np.concatenate([t for _, t in self.scores])
                if self.scores
                else np.zeros(0, dtype=np.int64)
            )
            figures = classification_report(targets, proba, self.classes, seed=bootstrap_seed)
        return Evaluation(
            loss=self.total_loss / n if n else 0.0,
            accuracy=accuracy,
            samples=n,
            values={"accuracy": accuracy},
            per_class_accuracy=per_class,
            confusion=tuple(tuple(int(v) for v in row) for row in confusion.tolist()),
            figures=figures,
        )


TASK = Classify()
