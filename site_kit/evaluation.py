"""One pass of a model over a data set, scored by the plan's task (``flsilo.tasks``)."""

from __future__ import annotations

import torch

from flsilo.plans.plan import TaskSpec
from flsilo.tasks import Evaluation, Task, load_task
from flsilo.tasks.classify import TASK as CLASSIFY
from site_kit.data import Dataset
from site_kit.data.samples import Samples
from site_kit.data.stream import batches, in_order
from site_kit.training import to_device

__all__ = ["Evaluation", "evaluate"]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: Dataset | Samples,
    num_classes: int,
    device: torch.device,
    batch_size: int = 1024,
    workers: int = 0,
    *,
    task: Task | str | None = None,
    classes: tuple[str, ...] | None = None,
    spec: TaskSpec | None = None,
    bootstrap_seed: int | None = None,
) -> Evaluation:
    """Score ``model`` on every sample of ``data`` in order (no augmentation).

    ``task`` (default classify) measures it; ``classes`` names the outputs (default
    ``"0".."K-1"``). With ``bootstrap_seed``, the evaluation also carries the task's
    per-class figures (``flsilo.scoring.metrics``) with seeded bootstrap intervals."""
    if isinstance(task, str):
        task = load_task(task)
    task = task or CLASSIFY
    names = classes or tuple(str(i) for i in range(num_classes))
    was_training = model.training
    model.eval()
    scorer = task.evaluator(names, spec or TaskSpec(task.name))
    for cpu_x, y in batches(data, in_order(len(data), batch_size), workers=workers):
        scorer.add(model, cpu_x.to(device), to_device(y, device))
    model.train(was_training)
    return scorer.finish(bootstrap_seed=bootstrap_seed)
