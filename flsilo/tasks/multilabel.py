"""``multilabel``: several findings per sample, each present or absent (one sigmoid each).

``--classes`` names the findings; a CSV (``csv``, ``images-csv``) holds one 0/1 column per
finding, named as the finding, and an ``npz`` file a ``y`` of one 0/1 row per sample. The
loss is binary cross-entropy per finding, summed over findings and averaged over samples
(so DP-SGD's per-sample loss is the sum over that sample's findings). A finding is called
present when its probability reaches its threshold (``--thresholds``, 0.5 by default).
The primary metric is the mean AUROC over findings; the closed-form head is ridge
regression on the multi-hot targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flsilo.plans.plan import MULTILABEL, TaskSpec
from flsilo.scoring.metrics import auroc, multilabel_report
from flsilo.tasks.base import Evaluation, Evaluator, LabelError, Target, Task

if TYPE_CHECKING:
    import torch

TRUE = {"1", "1.0", "true", "yes"}
FALSE = {"0", "0.0", "false", "no"}


def thresholds(spec: TaskSpec, findings: int) -> np.ndarray:
    """Each finding's decision threshold (0.5 where the plan gives none)."""
    return np.asarray(spec.thresholds or (0.5,) * findings, dtype=np.float64)


class Multilabel(Task):
    name = MULTILABEL
    primary_metric = "mean_auroc"
    closed_form = True
    closed_form_solvers = ("ridge",)
    supports_dp = True

    def label_columns(self, spec: TaskSpec, classes: tuple[str, ...]) -> tuple[str, ...]:
        del spec
        return classes

    def parse(self, cells: Sequence[str], spec: TaskSpec, classes: tuple[str, ...]) -> Target:
        del spec
        bits = []
        for name, cell in zip(classes, cells, strict=True):
            text = cell.strip().lower()
            if text not in TRUE and text not in FALSE:
                raise LabelError(f"finding {name!r} is {cell.strip()[:20]!r}, not 0 or 1")
            bits.append("1" if text in TRUE else "0")
        return Target(-1, "".join(bits))

    def decode(self, target: Target) -> np.ndarray:
        return np.frombuffer(target.text.encode(), dtype=np.uint8).astype(np.float32) - 48.0

    def counts(self, targets: np.ndarray, classes: tuple[str, ...]) -> list[int]:
        if not len(targets):
            return [0] * len(classes)
        return [int(c) for c in np.asarray(targets).reshape(len(targets), -1).sum(axis=0)]

    def spec_problem(self, spec: TaskSpec, classes: tuple[str, ...]) -> str | None:
        if spec.thresholds and len(spec.thresholds) != len(classes):
            return (
                f"{len(spec.thresholds)} thresholds for {len(classes)} findings "
                "(--thresholds gives one per finding, in --classes order)"
            )
        return None

    def collate(self, targets: Sequence[np.ndarray]) -> Any:
        import torch

        if not targets:
            return torch.zeros((0, 0), dtype=torch.float32)
        return torch.from_numpy(np.stack(targets).astype(np.float32))

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
        import torch.nn.functional as F

        logits = model(x)
        if y.shape[-1] == 0:  # an empty batch
            y = logits.new_zeros(logits.shape)
        per_sample = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()

    def evaluator(self, classes: tuple[str, ...], spec: TaskSpec) -> Evaluator:
        return MultilabelEvaluator(classes, thresholds(spec, len(classes)))

    def target_matrix(self, y: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(y, dtype=np.float64).reshape(len(y), k)


class MultilabelEvaluator(Evaluator):
    """Summed binary cross-entropy and every sample's probabilities."""

    def __init__(self, findings: tuple[str, ...], cut: np.ndarray) -> None:
        self.findings = findings
        self.cut = cut
        self.total_loss = 0.0
        self.proba: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []

    def add(self, model: torch.nn.Module, x: torch.Tensor, y: Any) -> None:
        import torch
        import torch.nn.functional as F

        logits = model(x)
        self.total_loss += float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum"))
        self.proba.append(torch.sigmoid(logits.double()).cpu().numpy())
        self.truth.append(y.cpu().numpy().copy())

    def finish(self, *, bootstrap_seed: int | None = None) -> Evaluation:
        k = len(self.findings)
        proba = np.concatenate(self.proba) if self.proba else np.zeros((0, k))
        truth = np.concatenate(self.truth) if self.truth else np.zeros((0, k))
        n = len(truth)
        pred = proba >= self.cut[None, :]
        positive = truth > 0.5
        exact = float(np.mean(np.all(pred == positive, axis=1))) if n else 0.0
        values: dict[str, float] = {"exact_match": exact}
        aurocs = [auroc(positive[:, j], proba[:, j]) for j in range(k)]
        known = [a for a in aurocs if a is not None]
        if known:
            values["mean_auroc"] = float(np.mean(known))
        for name, a in zip(self.findings, aurocs, strict=True):
            if a is not None:
                values[f"auroc.{name}"] = a
        figures = None
        if bootstrap_seed is not None:
            cut = self.cut.tolist()
            figures = multilabel_report(truth, proba, self.findings, cut, seed=bootstrap_seed)
            figures["mean_auroc"] = values.get("mean_auroc")
        per_finding = tuple(
            float(np.mean(pred[:, j] == positive[:, j])) if n else None for j in range(k)
        )
        return Evaluation(
            loss=self.total_loss / n if n else 0.0,
            accuracy=exact,
            samples=n,
            values=values,
            per_class_accuracy=per_finding,
            figures=figures,
        )


TASK = Multilabel()
