"""The metrics clinicians read: per class sensitivity, specificity, PPV, NPV, F1, AUROC, AP, ECE.

Plain numpy, no scikit-learn at run time; every definition mirrors scikit-learn's
(``recall_score``, ``precision_score``, ``f1_score``, ``roc_auc_score``,
``average_precision_score``, ``balanced_accuracy_score``, ``confusion_matrix``) and the
tests compare them on the same predictions. Where scikit-learn warns and substitutes a
number (a class with no positives, a prediction that never says positive), these functions
return ``None``: an undefined figure is reported as undefined, never as 0.

Classification is one-vs-rest per class: the class's positives are the samples whose true
class it is, its predicted positives those whose arg-max is it, and its score for AUROC
and AP the model's probability of it. Multilabel findings are binary problems of their own,
each with the plan's decision threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from flsilo.scoring import bootstrap, resampled
from flsilo.scoring.bootstrap import BOOTSTRAP_DRAWS, bootstrap_intervals

BINARY_FIELDS = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "balanced_accuracy",
    "auroc",
    "ap",
)
"""The per-class (per-finding) figures, in report order."""

ECE_BINS = 15


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None without both positives and negatives.

    Equal to scikit-learn's trapezoidal ``roc_auc_score``: the Mann-Whitney statistic with
    average ranks for tied scores.
    """
    truth = np.asarray(y_true, dtype=bool)
    pos = int(truth.sum())
    neg = truth.size - pos
    if pos == 0 or neg == 0:
        return None
    score = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size, dtype=np.float64)
    sorted_scores = score[order]
    # Average rank (1-based) over each run of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], score.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(run_rank, ends - starts)
    return float((ranks[truth].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    """Average precision (scikit-learn's step-wise sum, no interpolation); None without positives."""
    truth = np.asarray(y_true, dtype=bool)
    if not truth.any():
        return None
    score = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    hits = truth[order].astype(np.float64)
    ranked = score[order]
    # One threshold per distinct score: the last position of each run of ties.
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), score.size - 1]
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class BinaryMetrics:
    """One class (one-vs-rest) or one finding: counts and the figures built from them."""

    positives: int
    negatives: int
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    f1: float | None
    balanced_accuracy: float | None
    auroc: float | None
    ap: float | None


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray) -> BinaryMetrics:
    """Figures of one binary problem: truth, decision and score, one entry per sample."""
    truth = np.asarray(y_true, dtype=bool)
    pred = np.asarray(y_pred, dtype=bool)
    tp = int(np.sum(truth & pred))
    fp = int(np.sum(~truth & pred))
    fn = int(np.sum(truth & ~pred))
    tn = int(truth.size - tp - fp - fn)
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    return BinaryMetrics(
        positives=tp + fn,
        negatives=tn + fp,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=sens,
        specificity=spec,
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        balanced_accuracy=None if sens is None or spec is None else (sens + spec) / 2,
        auroc=auroc(truth, y_score),
        ap=average_precision(truth, y_score),
    )


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows the true class and columns the predicted one (scikit-learn's layout)."""
    index = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float | None:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return None
    return float(np.mean(np.diag(cm)[present] / support[present]))


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float | None:
    """ECE: the sample-weighted mean gap between accuracy and confidence over equal-width bins.

    Bins are (i/bins, (i+1)/bins], the first one closed at 0; ``confidence`` is the
    probability of the predicted class (or of the decision taken, for a finding).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return None
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.abs(
        np.bincount(which, weights=hit, minlength=bins)
        - np.bincount(which, weights=conf, minlength=bins)
    )
    return float(gap.sum() / conf.size)


def _figures(row: BinaryMetrics, names: Sequence[str]) -> dict[str, float | None]:
    values = {name: getattr(row, name) for name in names}
    return {name: None if v is None else float(v) for name, v in values.items()}


def binary_intervals(
    truth: np.ndarray,
    pred: np.ndarray,
    score: np.ndarray,
    names: Sequence[str],
    *,
    seed: int,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, tuple[float, float] | None]:
    """:func:`bootstrap_intervals` of :func:`binary_metrics`' figures ``names``, the same
    intervals byte for byte, with each block of resamples computed at once in numpy
    (:mod:`flsilo.scoring.resampled`)."""
    truth = np.asarray(truth, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if np.isnan(score).any():  # NaN scores tie with nothing, not even themselves
        return bootstrap_intervals(
            lambda idx: _figures(binary_metrics(truth[idx], pred[idx], score[idx]), names),
            names,
            truth.size,
            seed=seed,
            draws=draws,
        )
    if truth.size == 0 or draws <= 0:
        return {name: None for name in names}
    cells = resampled.Cells.of(truth, pred, score)
    if "ap" not in names or draws > bootstrap.rows_per_block(truth.size):
        # in blocks: the exact average precision of every resample
        return bootstrap.bootstrap_rows(
            lambda block: resampled.rows_binary(cells, block, names, exact=True),
            names,
            truth.size,
            seed=seed,
            draws=draws,
        )
    # average precision within a few ulps, and exact where the percentiles read it
    (block,) = bootstrap.resamples(truth.size, seed=seed, draws=draws)
    figures = resampled.rows_binary(cells, block, names, exact=False)
    values = {name: figures[name][0][figures[name][1]] for name in names}
    if values["ap"].size >= draws / 2:
        near = bootstrap.near_percentiles(values["ap"], cells.ap_tolerance)
        rows = np.flatnonzero(figures["ap"][1])[near]
        values["ap"][near] = resampled.exact_ap(cells, cells.drawn(block[rows]))
    return bootstrap.percentiles(values, draws)


def _with_intervals(
    row: BinaryMetrics,
    truth: np.ndarray,
    pred: np.ndarray,
    score: np.ndarray,
    *,
    seed: int,
    draws: int,
) -> dict[str, object]:
    out: dict[str, object] = asdict(row)
    if draws <= 0:
        return out
    defined = [name for name in BINARY_FIELDS if getattr(row, name) is not None]
    found = binary_intervals(truth, pred, score, defined, seed=seed, draws=draws)
    intervals: dict[str, list[float] | None] = {}
    for name in BINARY_FIELDS:
        interval = found.get(name)
        intervals[name] = None if interval is None else list(interval)
    out["ci95"] = intervals
    return out


def classification_report(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    seed: int = 0,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, object]:
    """Every figure of a single-label classifier: overall, per class with 95% intervals, ECE.

    ``proba`` is N x K class probabilities; the decision is its arg-max.
    """
    truth = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(proba, dtype=np.float64)
    pred = scores.argmax(axis=1) if truth.size else truth
    k = len(classes)
    per_class = {
        name: _with_intervals(
            binary_metrics(truth == i, pred == i, scores[:, i]),
            truth == i,
            pred == i,
            scores[:, i],
            seed=seed + i,
            draws=draws,
        )
        for i, name in enumerate(classes)
    }
    confidence = scores.max(axis=1) if truth.size else np.zeros(0)
    return {
        "samples": int(truth.size),
        "accuracy": float(np.mean(pred == truth)) if truth.size else None,
        "balanced_accuracy": balanced_accuracy(truth, pred, k),
        "ece": expected_calibration_error(confidence, pred == truth),
        "confusion": confusion_matrix(truth, pred, k).tolist(),
        "per_class": per_class,
    }


def multilabel_report(
    y_true: np.ndarray,
    proba: np.ndarray,
    findings: Sequence[str],
    thresholds: Sequence[float],
    *,
    seed: int = 0,
    draws: int = BOOTSTRAP_DRAWS,
) -> dict[str, object]:
    """Every figure of a multilabel model: per finding (each at its threshold), and ECE.

    ``y_true`` is N x F of 0/1; ``proba`` N x F probabilities; a finding is predicted
    present when its probability is at least its threshold.
    """
    truth = np.asarray(y_true, dtype=bool)
    scores = np.asarray(proba, dtype=np.float64)
    pred = scores >= np.asarray(thresholds, dtype=np.float64)[None, :]
    per_finding = {
        name: _with_intervals(
            binary_metrics(truth[:, j], pred[:, j], scores[:, j]),
            truth[:, j],
            pred[:, j],
            scores[:, j],
            seed=seed + j,
            draws=draws,
        )
        for j, name in enumerate(findings)
    }
    decision_conf = np.where(pred, scores, 1.0 - scores).ravel()
    return {
        "samples": int(truth.shape[0]),
        "exact_match": float(np.mean(np.all(pred == truth, axis=1))) if truth.size else None,
        "ece": expected_calibration_error(decision_conf, (pred == truth).ravel()),
        "per_class": per_finding,
    }


def suppress_small_cells(report: dict[str, object], min_cell_size: int) -> dict[str, object]:
    """A copy of ``report`` with every count below ``min_cell_size`` (but above 0) withheld.

    Counts (confusion cells, tp/fp/tn/fn, positives/negatives) that could single out a few
    patients become None; the rates built from them stay (they reveal no count on their
    own only when the counts are large, so a rate whose denominator is small is withheld
    too).
    """
    if min_cell_size <= 1:
        return report
    out = dict(report)

    def small(v: object) -> bool:
        return isinstance(v, int) and 0 < v < min_cell_size

    confusion = out.get("confusion")
    if isinstance(confusion, list):
        out["confusion"] = [[None if small(c) else c for c in row] for row in confusion]
    per = out.get("per_class")
    withheld_objects = False
    if isinstance(per, dict):
        cleaned: dict[str, object] = {}
        for name, row in per.items():
            row = dict(row)
            for key in ("tp", "fp", "tn", "fn"):
                if small(row.get(key)):
                    row[key] = None
            if small(row.get("positives")) or small(row.get("negatives")):
                for key in (*BINARY_FIELDS, "positives", "negatives", "ci95"):
                    row[key] = None
            if small(row.get("objects")):  # detection: a class seen a few times, and its AP
                row["objects"] = row["ap50"] = None
                withheld_objects = True
            cleaned[name] = row
        out["per_class"] = cleaned
    # the total less the classes shown would give back a withheld class's count
    if withheld_objects or small(out.get("objects")):
        out["objects"] = None
    return out
