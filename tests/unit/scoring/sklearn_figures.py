"""scikit-learn's figures for the cases ``test_metrics.py`` compares flsilo's metrics with.

The slow tier computes them with scikit-learn on every run (Hypothesis draws the cases
there); the default tier reads them, for a fixed set of cases, from
``tests/fixtures/metrics/sklearn.json`` (no scikit-learn import: 1 s of CPU), and the slow
tier checks that file against scikit-learn. Written with
``python -m tests.unit.scoring.sklearn_figures tests/fixtures/metrics/sklearn.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "sklearn.json"

RANKED_CASES = [
    (0, 2, False),
    (1, 3, True),
    (7, 10, True),
    (11, 17, False),
    (42, 40, True),
    (5, 64, False),
    (123, 129, True),
    (9_999, 200, False),
    (77, 200, True),
    (3, 1, False),  # one sample: one class
]
"""(seed, samples, tied scores) for AUROC and average precision."""

COUNT_CASES = [(0, 1), (1, 2), (2, 5), (3, 9), (17, 33), (64, 80), (500, 150), (8, 4)]
"""(seed, samples) for the counts and rates."""

REPORT_CASE = (3, 300, 4)
"""(seed, samples, classes) for a classification report."""


def binary_case(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=n)
    score = rng.random(n)
    if ties:
        score = np.round(score, 1)  # many tied scores: the hard case for both curves
    return truth, score


def count_case(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=n)
    pred = rng.integers(0, 2, size=n)
    return truth, pred, rng.random(n)


def report_case(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[truth]
    return truth, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _sk() -> Any:  # imported where used: 1 s of CPU
    import sklearn.metrics

    return sklearn.metrics


def ranked(seed: int, n: int, ties: bool) -> dict[str, float | None]:
    """scikit-learn's AUROC and average precision (None with one class only)."""
    sk = _sk()
    truth, score = binary_case(seed, n, ties)
    if truth.min() == truth.max():
        return {"auroc": None, "ap": None}
    return {
        "auroc": float(sk.roc_auc_score(truth, score)),
        "ap": float(sk.average_precision_score(truth, score)),
    }


def counts(seed: int, n: int) -> dict[str, Any]:
    """scikit-learn's confusion counts and rates (None where it would warn)."""
    sk = _sk()
    truth, pred, _ = count_case(seed, n)
    tn, fp, fn, tp = (int(v) for v in sk.confusion_matrix(truth, pred, labels=[0, 1]).ravel())
    out: dict[str, Any] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    out["sensitivity"] = float(sk.recall_score(truth, pred)) if tp + fn else None
    out["ppv"] = float(sk.precision_score(truth, pred)) if tp + fp else None
    out["specificity"] = float(sk.recall_score(truth, pred, pos_label=0)) if tn + fp else None
    out["npv"] = float(sk.precision_score(truth, pred, pos_label=0)) if tn + fn else None
    out["f1"] = float(sk.f1_score(truth, pred)) if 2 * tp + fp + fn else None
    both = tp + fn and tn + fp
    out["balanced_accuracy"] = float(sk.balanced_accuracy_score(truth, pred)) if both else None
    return out


def report(seed: int, n: int, k: int) -> dict[str, Any]:
    """scikit-learn's confusion matrix, balanced accuracy and per class F1, AUROC and AP."""
    sk = _sk()
    truth, proba = report_case(seed, n, k)
    pred = proba.argmax(axis=1)
    return {
        "confusion": sk.confusion_matrix(truth, pred, labels=range(k)).tolist(),
        "balanced_accuracy": float(sk.balanced_accuracy_score(truth, pred)),
        "f1": [float(v) for v in sk.f1_score(truth, pred, average=None, labels=range(k))],
        "auroc": [
            float(v) for v in sk.roc_auc_score(truth, proba, multi_class="ovr", average=None)
        ],
        "ap": [float(sk.average_precision_score(truth == i, proba[:, i])) for i in range(k)],
    }


def figures() -> dict[str, Any]:
    """Every recorded case's scikit-learn figures, keyed as in the file."""
    return {
        "ranked": {json.dumps(case): ranked(*case) for case in RANKED_CASES},
        "counts": {json.dumps(case): counts(*case) for case in COUNT_CASES},
        "report": report(*REPORT_CASE),
    }


def recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text(encoding="utf-8"))


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(figures(), indent=1) + "\n", encoding="utf-8")
