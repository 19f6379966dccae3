"""A task plug-in with a primary figure of its own: classification led by its macro-averaged
F1 (``--task tests.plugin_metric_task:TASK``), for the reports and claims that must show
that figure by its key, never an accuracy in its place. Like the built-in tasks, it imports
torch only where it computes (the hub's commands that need no model never load it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flsilo.plans.plan import TaskSpec
from flsilo.tasks.base import Evaluation, Evaluator
from flsilo.tasks.classify import Classify, ClassifyEvaluator


def macro_f1(confusion: tuple[tuple[int, ...], ...]) -> float:
    """The mean over classes of F1 (a class neither present nor predicted counts 0)."""
    k = len(confusion)
    scores = []
    for c in range(k):
        tp = confusion[c][c]
        predicted = sum(confusion[r][c] for r in range(k))
        actual = sum(confusion[c])
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / k if k else 0.0


class MacroF1Evaluator(ClassifyEvaluator):
    def finish(self, *, bootstrap_seed: int | None = None) -> Evaluation:
        done = super().finish(bootstrap_seed=bootstrap_seed)
        values = {"macro_f1": macro_f1(done.confusion), "top1": done.accuracy}
        return dataclasses.replace(done, values=values)


class MacroF1Classify(Classify):
    """Single-label classification whose reports lead with macro F1."""

    name = "tests.plugin_metric_task:TASK"
    primary_metric = "macro_f1"

    def evaluator(self, classes: tuple[str, ...], spec: TaskSpec) -> Evaluator:
        del spec
        return MacroF1Evaluator(classes)


TASK: Any = MacroF1Classify()
