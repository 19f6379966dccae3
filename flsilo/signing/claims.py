"""The hub's own claims about a package: figures it measured on a test set it holds.

``flsilo aggregate --eval DATA`` scores every new package on the hub's test set before it
is signed and records the figures twice, both signed by the hub: in the package's manifest
(``package.hub_evaluation``) and in the round's ``aggregate`` log event. A claim names the
test set by its index digest and its record count, never its records, and names the
package's tensors it scored by their digest (the package's data sha256, which ``audit``
checks). ``audit --replay`` checks that the two copies agree; it does not recompute them
(the test set stays at the hub).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flsilo.plans.plan import OMIT_DEFAULT

CLAIM_FIGURES = ("accuracy", "balanced_accuracy", "ece", "loss")
"""The overall figures a classify claim carries (``None`` where undefined); another task's
claim carries its own flat figures, its primary metric among them, and the loss."""
PRIMARY = {
    "classify": "accuracy",
    "multilabel": "mean_auroc",
    "sequence": "exact_match",
    "detect": "map50",
}
"""Each built-in task's primary figure: what a claim (and a site's report) leads with."""
PERCENT = ("accuracy", "exact_match")
"""Figures shown as percentages; the others (AUROC, mAP, CER) as numbers."""
NAMES = {
    "accuracy": "accuracy",
    "mean_auroc": "mean AUROC",
    "exact_match": "exact match",
    "cer": "CER",
    "map50": "mAP@0.5",
    "map": "mAP@0.5:0.95",
    "balanced_accuracy": "balanced accuracy",
}
"""How people read a figure's key (a plug-in task's own keys are shown as they are)."""
FIGURE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.@-]{0,63}")
"""What a figure's key may be where a report or claim names one (``primary_metric``)."""
CLASS_FIGURES = ("sensitivity", "specificity", "ppv", "npv", "f1", "auroc", "ap")
"""The figures a claim carries per class, each with its bootstrap 95% interval."""
DETECT_CLASS_FIGURES = ("ap50",)
"""A detector's figures per class (a site's detection report's, besides its object count);
no interval is computed for them."""


@dataclass(frozen=True)
class HubEvaluation:
    """Figures the hub measured on its own test set, for one package's tensors."""

    test_set_sha256: str
    """The test set's index digest: sha256 of its records in order (source, target and the
    sha256 of each record's bytes), the same digest a site's data index has."""
    test_set_records: int
    data_format: str
    data_sha256: str
    """The digest of the package's tensors that were scored (its data section)."""
    task: str
    samples: int
    skipped: int
    figures: dict[str, float | None]
    per_class: dict[str, dict[str, float | None]]
    ci95: dict[str, dict[str, tuple[float, ...] | None]]
    """Per class, per figure: the bootstrap 95% interval (low, high), or null."""
    confusion: tuple[tuple[int | None, ...], ...]
    """Rows true class, columns predicted; a cell below the plan's ``min_cell_size`` is null,
    and the matrix is empty in a DP federation (as in the sites' reports)."""
    bootstrap_seed: int
    bootstrap_draws: int
    software: dict[str, str] = field(default_factory=dict)
    primary_metric: str = field(default="", metadata=OMIT_DEFAULT)
    """A plug-in task's primary figure (a key of ``figures``), named by the task that scored
    it; left out for a built-in task, whose primary figure is known by the task's name."""
    objects: dict[str, int | None] = field(default_factory=dict, metadata=OMIT_DEFAULT)
    """detect: per class, the ground-truth boxes in the test set (0: the class has none, so
    its AP is null; null: fewer than ``min_cell_size``, withheld with its AP); left out for
    other tasks."""

    @property
    def accuracy(self) -> float | None:
        return self.figures.get("accuracy")


def claim_from_report(
    report: dict[str, object],
    *,
    task: str,
    values: Mapping[str, float | None],
    loss: float | None,
    test_set_sha256: str,
    test_set_records: int,
    data_format: str,
    data_sha256: str,
    skipped: int,
    seed: int,
    draws: int,
    software: dict[str, str],
    primary: str = "",
) -> HubEvaluation:
    """A claim from a task's evaluation: ``values`` (its flat figures, the primary one
    among them) and ``report`` (its full figures, e.g.
    :func:`flsilo.scoring.metrics.classification_report`: per class rows with intervals, the
    confusion matrix, balanced accuracy, ECE; whichever of these the task reports).
    ``primary`` is the task's primary metric (recorded for a plug-in task only).

    A detector's per-class rows (they carry ``objects``) keep their AP@0.5 and the count of
    boxes, as the sites' reports do, so a class without boxes reads as such (0 boxes, AP
    null) and a withheld one as withheld (both null); they have no intervals."""
    rows = report.get("per_class") or report.get("per_finding") or {}
    assert isinstance(rows, dict)
    per_class: dict[str, dict[str, float | None]] = {}
    ci95: dict[str, dict[str, tuple[float, ...] | None]] = {}
    objects: dict[str, int | None] = {}
    for name, row in rows.items():
        if "objects" in row:  # detect
            per_class[name] = {k: _num(row.get(k)) for k in DETECT_CLASS_FIGURES}
            objects[name] = None if row["objects"] is None else int(row["objects"])
            continue
        per_class[name] = {k: _num(row.get(k)) for k in CLASS_FIGURES}
        found = row.get("ci95") or {}
        ci95[name] = {
            k: tuple(float(x) for x in found[k]) if found.get(k) else None for k in CLASS_FIGURES
        }
    confusion = report.get("confusion") or []
    assert isinstance(confusion, list)
    overall = {k: _num(report.get(k)) for k in ("balanced_accuracy", "ece") if k in report}
    return HubEvaluation(
        test_set_sha256=test_set_sha256,
        test_set_records=test_set_records,
        data_format=data_format,
        data_sha256=data_sha256,
        task=task,
        samples=int(report.get("samples", 0)),  # type: ignore[call-overload]
        skipped=skipped,
        figures={k: _num(v) for k, v in values.items()} | overall | {"loss": loss},
        per_class=per_class,
        ci95=ci95,
        confusion=tuple(tuple(None if v is None else int(v) for v in row) for row in confusion),
        bootstrap_seed=seed,
        bootstrap_draws=draws,
        software=software,
        primary_metric="" if task in PRIMARY else primary,
        objects=objects,
    )


def claim_fields_problem(claim: HubEvaluation) -> str | None:
    """Why a claim's ``primary_metric`` or ``objects`` is not as flsilo writes them, or None
    (a claim written before they existed has neither): a plug-in's figure key, a count of
    boxes per class of the claim's rows, never negative. Nothing read is echoed."""
    named = claim.primary_metric
    if named and claim.task in PRIMARY:
        return f"a {claim.task} hub claim names no primary_metric (its task's is known)"
    if named and not FIGURE_KEY.fullmatch(named):
        return (
            "the hub claim's primary_metric is not a figure's key "
            "(letters, digits, _.@-, at most 64)"
        )
    if not set(claim.objects) <= set(claim.per_class):
        return "the hub claim counts the boxes of a class it has no row for"
    if any(n is not None and n < 0 for n in claim.objects.values()):
        return "the hub claim counts fewer than 0 boxes of a class"
    return None


def _num(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def figure_key(task: str, figures: Mapping[str, Any], named: object = "") -> str | None:
    """The key of the figure a site's report or a hub claim leads with, read from the
    report or claim alone (nothing is imported: a plug-in task need not be installed where
    it is read, and the hub's commands that need no model do not import torch):

    1. a built-in task's primary figure (:data:`PRIMARY`), whatever else it says;
    2. a plug-in task's: the one it names itself (``primary_metric``, signed with it);
    3. else (a plug-in task's report or claim written before they named it) its first
       whole-set figure by key, other than ``samples`` and the loss;

    None when it holds no such figure. Never ``accuracy`` unless it names or holds one."""
    if task in PRIMARY:
        return PRIMARY[task]
    if isinstance(named, str) and named:
        return named
    return next(
        (k for k in sorted(figures) if k not in ("samples", "loss") and is_figure(figures[k])),
        None,
    )


def is_figure(value: object) -> bool:
    """A number (not a bool): what a figure's value is, where it is defined."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def lead_figure(claim: Mapping[str, Any]) -> tuple[str, float | None]:
    """A claim's (JSON form) leading figure, as ``(name, value)``: see :func:`figure_key`
    (the loss where a plug-in's claim holds no other figure)."""
    figures = claim["figures"]
    name = figure_key(claim["task"], figures, claim.get("primary_metric", "")) or "loss"
    return name, figures.get(name)


def show_figure(name: str, value: float | None) -> str:
    """``93.0%`` for a percentage figure, ``0.912`` for another, ``-`` when undefined."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if name in PERCENT else f"{value:.3f}"


def metric_name(name: str) -> str:
    """``mean AUROC`` for ``mean_auroc``, ``mAP@0.5`` for ``map50``; another key as it is."""
    return NAMES.get(name, name)


def show_metric(name: str, value: float | None) -> str:
    """A figure with its name, the one format every report uses: ``accuracy 93.0%``,
    ``mean AUROC 0.941``, ``exact match 88.2%``, ``mAP@0.5 0.912``."""
    return f"{metric_name(name)} {show_figure(name, value)}"
