"""Tasks: what a label is, and the loss, targets, collate and metrics that follow from it.

``task_for(plan)`` (or ``load_task(name)``) gives the :class:`~flsilo.tasks.base.Task` a
plan names: a built-in from ``BUILTIN``, or a plug-in ``package.module:attr`` imported
here. A name this flsilo cannot resolve is refused with one line, a code and a hint (a site
given a package whose task it does not know). See ``flsilo/tasks/base.py`` for how to
write a task. Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flsilo.plans.plan import BUILTIN_TASKS, CLASSIFY, PLUGIN_TASK, Plan, TaskSpec, dp_of
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.claims import FIGURE_KEY
from flsilo.tasks.base import Evaluation, Evaluator, LabelError, Target, Task

__all__ = [
    "BUILTIN",
    "Evaluation",
    "Evaluator",
    "LabelError",
    "Target",
    "Task",
    "load_task",
    "task_for",
]

BUILTIN: dict[str, str] = {
    "classify": "flsilo.tasks.classify:TASK",
    "multilabel": "flsilo.tasks.multilabel:TASK",
    "sequence": "flsilo.tasks.sequence:TASK",
    "detect": "flsilo.tasks.detect:TASK",
}
"""Every built-in task: its ``--task`` name and where its ``Task`` object lives."""

assert set(BUILTIN) == set(BUILTIN_TASKS)
_loaded: dict[str, Task] = {}


def task_for(plan: Plan | TaskSpec) -> Task:
    """The task a plan (or a model's ``TaskSpec``) names."""
    return load_task(plan.task if isinstance(plan, Plan) else plan.name)


def load_task(name: str) -> Task:
    """The ``Task`` called ``name``: a built-in, or a plug-in ``package.module:attr``."""
    if name in _loaded:
        return _loaded[name]
    where = BUILTIN.get(name, name)
    if not PLUGIN_TASK.match(where):
        raise _unknown(name, "it is neither a built-in task nor a package.module:task plug-in")
    module_name, _, attr = where.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _unknown(name, f"{exc.name or module_name} cannot be imported here") from exc
    task = getattr(module, attr, None)
    if isinstance(task, type) and issubclass(task, Task):
        task = task()
    if not isinstance(task, Task):
        raise _unknown(name, f"{module_name} has no Task object named {attr!r}")
    if name not in BUILTIN and not task.name:
        task.name = name
    if not isinstance(task.primary_metric, str) or not FIGURE_KEY.fullmatch(task.primary_metric):
        raise FlsiloError(  # its reports and the hub's claims name it: readers would refuse them
            f"task {name!r} names a primary_metric that is not a figure's key "
            "(letters, digits, _.@-, at most 64)",
            code=Code.UNKNOWN_TASK,
            hint="ask the task's author to name primary_metric by its key in Evaluation.values",
        )
    _loaded[name] = task
    return task


def primary_metric(name: str) -> str:
    """The task's primary metric (what reports lead with); ``accuracy`` where this flsilo
    cannot load the task (a plug-in not installed here)."""
    try:
        return load_task(name).primary_metric
    except FlsiloError:
        return "accuracy"


def require_task(plan: Plan, package: Path) -> Task:
    """The task of a package's plan; refused (naming the package) when this flsilo does not
    know it, or cannot train it as the plan says."""
    try:
        task = task_for(plan)
    except FlsiloError as exc:
        raise FlsiloError(exc.message, path=package, code=exc.code, hint=exc.hint) from exc
    if dp_of(plan) is not None and not task.supports_dp:
        raise FlsiloError(
            f"the plan asks for DP-SGD, which task {plan.task} does not support",
            path=package,
            code=Code.UNKNOWN_TASK,
            hint="ask the hub administrator: this federation's plan cannot be trained",
        )
    return task


def _unknown(name: str, why: str) -> FlsiloError:
    builtin = name in BUILTIN
    return FlsiloError(
        f"task {name!r} is not known to this flsilo ({why})",
        code=Code.UNKNOWN_TASK,
        hint="upgrade flsilo (a newer version has this task)"
        if builtin
        else "install the package that provides this task at every site and the hub, "
        f"or use a built-in task: {', '.join(BUILTIN)}",
    )


def is_classify(spec: TaskSpec) -> bool:
    return spec.name == CLASSIFY


def output_size(spec: TaskSpec, classes: tuple[str, ...]) -> int:
    """The width of the model's output for this task (``build_model``'s class count)."""
    if spec.name == CLASSIFY:
        return len(classes)
    return load_task(spec.name).output_size(classes, spec)


def model_task(spec: TaskSpec | None) -> TaskSpec | None:
    """What ``ModelInfo.task`` holds for ``spec``: None for classify (left out of files)."""
    return None if spec is None or spec == TaskSpec() else spec
