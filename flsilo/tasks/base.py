"""The task protocol: what a label is, and everything that depends on it.

How to write a task
-------------------
A task is one object (a subclass of :class:`Task`, usually a module-level ``TASK``) that
the plan names (``Plan.task``: ``classify``, ``multilabel``, ``sequence``, ``detect``, or
``package.module:attr`` for a plug-in). The training loop, evaluation, statistics rounds,
the data adapters and ``simulate`` ask it; none of them assume class indices. Every method
that depends on the task's settings receives a ``flsilo.plans.plan.TaskSpec`` (name,
``thresholds``, ``charset``, ``max_length``: the plan's fields of those names, also signed
into every manifest's model description) and the ``classes`` (``--classes``). It has two
halves:

**Targets (no torch; the data adapters and ``site check-data`` call these).**

- ``label_columns(spec, classes)``: the CSV columns (``csv``, ``images-csv``) that hold the
  target. An adapter refuses a file whose header lacks one, showing the header it found.
- ``parse(cells, spec, classes) -> Target``: the cells of those columns for one row (for
  ``npz``, the row of ``y`` as text) to a ``Target``: ``index`` (a class index, or -1) and
  ``text`` (the task's own canonical text of the label, "" for classify). Raise
  ``LabelError(why)`` for a row that is not a label (the row becomes a bad record naming
  it: a character outside the charset, a cell that is not 0/1). The site's index stores
  both and hashes ``text`` only when it is not empty.
- ``decode(target) -> np.ndarray``: the stored target as the array a batch is made of
  (classify: an int64 scalar; multilabel: float32 0/1 per finding; sequence: int64 codes;
  detect: an (n, 5) float32 array of class and box). Called in DataLoader workers.
  A task whose decoding needs the plan's settings overrides ``decode_target(target, spec)``
  instead (sequence: the charset), which is what the data pipeline calls.
- ``counts(targets, classes)``: per-class (per-finding) sample counts from decoded targets,
  for ``--min-cell-size`` and the reports' suppression.

**Model side (torch; imported lazily by the methods that need it).**

- ``output_size(classes, spec)``: the width of the model's output (its head), which
  ``build_model`` receives as its class count; ``classes`` (``--classes``) name the
  classes, the findings or the object classes; ``output_names`` the head's rows.
- ``model_problem(model, input_shape, spec)``: why a model cannot serve the task (its
  output has the wrong shape), asked by ``hub init``; None by default.
- ``collate(targets) -> batch``: a batch's decoded targets as what ``loss`` takes (a tensor,
  or a list of tensors for variable-length targets). Must accept an empty list (Poisson
  sampling under DP may draw an empty batch).
- ``loss(model, x, y, reduction)``: the batch loss, ``reduction`` ``"mean"`` or ``"sum"``
  (DP-SGD needs the sum of per-sample losses). A model that computes its own loss (a
  detector) is called here however it needs to be; the loop only calls ``backward``.
- ``evaluator(classes, spec) -> Evaluator``: an accumulator the evaluation loop feeds
  batch by batch (``add(model, x, y)``, in eval mode under ``no_grad``) and asks once for
  an :class:`Evaluation` (``finish()``): the loss, ``values`` (a flat dict of figures
  including ``primary_metric``; these go into the bundle's manifest), and, where the task
  has them, per-class clinical figures (``flsilo.scoring.metrics``).

**Facts the rest of flsilo checks before it starts.**

- ``primary_metric``: the key of ``Evaluation.values`` that ``hub history`` plots and the
  reports lead with; ``higher_is_better`` says which way is good.
- ``closed_form``: whether ``closed-form`` schedules apply; then ``target_matrix(y, k)``
  gives the (n, k) float targets a ridge head is fitted to (one-hot, multi-hot).
- ``supports_dp``: whether DP-SGD (Opacus) applies, i.e. ``loss(..., "sum")`` is a sum of
  per-sample losses over layers Opacus can compute per-sample gradients of; a DP plan
  with a task that says False is refused before any training. ``dp_problem(model)``
  says why one model of a task that supports DP cannot (detect: torchvision's
  detectors), asked by ``hub init`` for a DP plan; None by default.
- ``spec_problem(spec, classes)``: the task's own plan rules (thresholds per finding, a
  charset...), in words, or None.

Register a built-in task in ``flsilo.tasks.BUILTIN`` (name -> ``module:attr``); a plug-in
needs nothing but to be importable at every site (see docs/how-to/plugin-task.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flsilo.format.manifest import Metrics
from flsilo.plans.plan import TaskSpec

if TYPE_CHECKING:
    import torch


class LabelError(ValueError):
    """A row's label cells are not a label of this task (the row becomes a bad record)."""


@dataclass(frozen=True)
class Target:
    """One record's target as the index stores it: a class index and the task's text."""

    index: int = -1
    text: str = ""


@dataclass(frozen=True)
class Evaluation:
    """What one pass of a model over some data measured.

    ``values`` is flat (name -> figure) and holds the task's ``primary_metric``;
    ``figures`` is ``flsilo.scoring.metrics.Figures`` (per class or finding, with intervals) where
    the task computes them, else None. ``accuracy`` is the share of samples predicted
    exactly right (classify: top-1; multilabel: every finding right at its threshold;
    sequence: the exact string), so reports that predate tasks keep their column.
    """

    loss: float
    accuracy: float
    samples: int
    values: dict[str, float] = field(default_factory=dict)
    per_class_accuracy: tuple[float | None, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()
    figures: dict[str, Any] | None = None

    def metrics(self) -> Metrics:
        """The figures a bundle's manifest records (the task's values unless they are only
        the accuracy, so classification bundles keep their bytes)."""
        values = {} if set(self.values) <= {"accuracy"} else dict(self.values)
        return Metrics(loss=self.loss, accuracy=self.accuracy, samples=self.samples, values=values)


class Evaluator:
    """Accumulates one evaluation batch by batch (see :meth:`Task.evaluator`)."""

    def add(self, model: torch.nn.Module, x: torch.Tensor, y: Any) -> None:
        raise NotImplementedError

    def finish(self, *, bootstrap_seed: int | None = None) -> Evaluation:
        """The evaluation; with ``bootstrap_seed``, also the per-class figures."""
        raise NotImplementedError


class Task:
    """One kind of learning problem (see the module docstring for how to write one)."""

    name: str = ""
    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    closed_form: bool = False
    closed_form_solvers: tuple[str, ...] = ("ridge", "ncm")
    supports_dp: bool = True
    needs_classes: bool = True
    formats: tuple[str, ...] = ("csv", "images-csv", "npz")
    """Data formats that can carry this task's targets (imagefolder: classify only)."""
    geometric: bool = False
    """Targets lie in the picture (detect's boxes): the data pipeline gives them through
    ``place``, which moves them with the pixels."""

    # -- targets (no torch) -----------------------------------------------------------------
    def label_columns(self, spec: TaskSpec, classes: tuple[str, ...]) -> tuple[str, ...]:
        raise NotImplementedError

    def parse(self, cells: Sequence[str], spec: TaskSpec, classes: tuple[str, ...]) -> Target:
        raise NotImplementedError

    def decode(self, target: Target) -> np.ndarray:
        raise NotImplementedError

    def place(
        self, target: Target, resize: str, input_size: tuple[int, int], flipped: bool
    ) -> np.ndarray:
        """The target of a sample whose pixels the plan's ``resize`` brought to
        ``input_size`` (height, width) and, where ``flipped``, flipped left-right; the
        pipeline asks this instead of ``decode``. Only geometric tasks move anything."""
        del resize, input_size, flipped
        return self.decode(target)

    def decode_target(self, target: Target, spec: TaskSpec) -> np.ndarray:
        """``decode`` for a task whose stored label needs the plan's settings to become an
        array (sequence: the charset maps characters to outputs); what the data pipeline
        calls. The default ignores ``spec``."""
        del spec
        return self.decode(target)

    def counts(self, targets: np.ndarray, classes: tuple[str, ...]) -> list[int]:
        """Samples per class (per finding): what ``--min-cell-size`` guards."""
        raise NotImplementedError

    def spec_problem(self, spec: TaskSpec, classes: tuple[str, ...]) -> str | None:
        del spec, classes
        return None

    # -- model side (torch) -----------------------------------------------------------------
    def model_problem(
        self, model: torch.nn.Module, input_shape: tuple[int, ...], spec: TaskSpec
    ) -> str | None:
        """Why ``model`` cannot serve this task (``hub init`` asks before round 0), or None.
        ``input_shape`` and ``spec`` let a task try the model (sequence: its time steps)."""
        del input_shape, spec
        from flsilo.models.detector import is_detector

        if is_detector(model):
            return "it is an object detector (use it with --task detect)"
        return None

    def dp_problem(self, model: torch.nn.Module) -> str | None:
        """Why DP-SGD cannot train ``model`` for this task (``hub init`` asks when the plan
        has DP), or None: its loss is not a sum of per-sample losses."""
        del model
        return None

    def output_size(self, classes: tuple[str, ...], spec: TaskSpec) -> int:
        del spec
        return len(classes)

    def output_names(self, classes: tuple[str, ...], spec: TaskSpec) -> tuple[str, ...]:
        del spec
        return classes

    def collate(self, targets: Sequence[np.ndarray]) -> Any:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: Any, reduction: str) -> torch.Tensor:
        raise NotImplementedError

    def evaluator(self, classes: tuple[str, ...], spec: TaskSpec) -> Evaluator:
        raise NotImplementedError

    def target_matrix(self, y: np.ndarray, k: int) -> np.ndarray:
        """(n, k) float64 targets for a closed-form head (tasks with ``closed_form``)."""
        raise NotImplementedError(f"task {self.name!r} has no closed-form head")
