"""The cases of ``tests/fixtures/metrics/reference.jsonl``: bootstrap intervals and reports
over ties, one class, an empty class, all-equal and NaN scores, tiny and large samples and
several seeds, each input made from its case's parameters alone.

The file holds the outputs of flsilo.scoring.metrics as it was at fd48f30, before its
intervals were computed all resamples at once; signed evaluation reports and model cards
carry these numbers, so ``test_metrics_reference.py`` checks that today's code gives every
one of them to the bit. Written once with
``python -m tests.unit.scoring.metrics_cases tests/fixtures/metrics/reference.jsonl``
and committed: never rewrite it to make a change pass.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flsilo.scoring import metrics as m
from flsilo.scoring.strings import string_intervals

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "metrics" / "reference.jsonl"

BIG_SEED = 0xFEDCBA98  # the size of a seed from a package's digest (site_kit.package_eval)


def _scores(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    score = rng.random(n)
    if kind == "ties":
        score = np.round(score, 1)
    elif kind == "coarse":
        score = np.round(score, 2)
    elif kind == "equal":
        score = np.full(n, 0.5)
    elif kind == "binary":
        score = (score < 0.5).astype(np.float64)
    elif kind == "nan":
        score[::3] = np.nan
    elif kind == "zeros":  # -0.0 and 0.0 tie
        score = np.where(score < 0.5, -0.0, np.round(score, 1))
    return score


def binary_cases() -> Iterator[dict[str, Any]]:
    """binary_intervals of every figure (and of a few alone) over sizes, rates and scores."""
    sizes = (1, 2, 3, 7, 8, 9, 16, 17, 40, 129, 200, 301)
    for i, n in enumerate(sizes):
        for truth_rate, pred_rate, kind in (
            (0.5, 0.4, "cont"),
            (0.3, 0.5, "ties"),
            (0.05, 0.3, "coarse"),
            (0.0, 0.4, "cont"),
            (1.0, 0.6, "ties"),
            (0.4, 0.0, "equal"),
            (0.5, 1.0, "binary"),
            (0.5, 0.5, "zeros"),
        ):
            draws = 1000 if n in (7, 40, 200) else (60 if n != 301 else 200)
            yield {
                "kind": "binary",
                "n": n,
                "truth": truth_rate,
                "pred": pred_rate,
                "scores": kind,
                "seed": i,
                "draws": draws,
                "names": list(m.BINARY_FIELDS),
            }
    for n, kind in ((40, "nan"), (9, "nan")):
        yield {
            "kind": "binary",
            "n": n,
            "truth": 0.5,
            "pred": 0.4,
            "scores": kind,
            "seed": 3,
            "draws": 100,
            "names": list(m.BINARY_FIELDS),
        }
    for names in (["auroc"], ["ap", "sensitivity"], ["f1", "npv", "balanced_accuracy"]):
        yield {
            "kind": "binary",
            "n": 60,
            "truth": 0.2,
            "pred": 0.3,
            "scores": "ties",
            "seed": 11,
            "draws": 300,
            "names": names,
        }
    for draws in (0, 1, 2, 3):
        yield {
            "kind": "binary",
            "n": 30,
            "truth": 0.5,
            "pred": 0.5,
            "scores": "cont",
            "seed": 5,
            "draws": draws,
            "names": list(m.BINARY_FIELDS),
        }
    for n, draws, kind in ((1000, 1000, "cont"), (2500, 1000, "coarse"), (0, 1000, "cont")):
        yield {
            "kind": "binary",
            "n": n,
            "truth": 0.3,
            "pred": 0.3,
            "scores": kind,
            "seed": BIG_SEED,
            "draws": draws,
            "names": list(m.BINARY_FIELDS),
        }


def report_cases() -> Iterator[dict[str, Any]]:
    """classification_report and multilabel_report, as the tasks call them."""
    for n, k, variant, seed in (
        (200, 4, "normal", BIG_SEED),
        (140, 3, "normal", 7),
        (60, 3, "empty", 2),
        (30, 2, "oneclass", 9),
        (25, 3, "equal", 4),
        (80, 5, "rounded", 12),
        (3, 2, "normal", 1),
        (1, 3, "normal", 1),
        (0, 3, "normal", 1),
        (300, 2, "normal", 0),
    ):
        yield {
            "kind": "classification",
            "n": n,
            "k": k,
            "variant": variant,
            "seed": seed,
            "draws": 1000 if n <= 200 else 200,
        }
    for n, variant, seed in (
        (200, "normal", BIG_SEED),
        (50, "absent", 6),
        (40, "rounded", 8),
        (2, "normal", 0),
        (0, "normal", 0),
    ):
        yield {"kind": "multilabel", "n": n, "variant": variant, "seed": seed, "draws": 1000}


def other_cases() -> Iterator[dict[str, Any]]:
    """bootstrap_intervals of a statistic of one's own, and the sequence task's intervals."""
    for n, seed, draws in (
        (1, 0, 1000),
        (4, 3, 1000),
        (6, BIG_SEED, 1000),
        (37, 2, 500),
        (0, 1, 10),
    ):
        yield {"kind": "generic", "n": n, "seed": seed, "draws": draws}
        yield {"kind": "strings", "n": n, "seed": seed, "draws": draws}


def cases() -> Iterator[dict[str, Any]]:
    yield from binary_cases()
    yield from report_cases()
    yield from other_cases()


def case_id(case: dict[str, Any]) -> str:
    return json.dumps(case, sort_keys=True)


def _binary(case: dict[str, Any]) -> object:
    rng = np.random.default_rng([case["n"], int(case["truth"] * 100), int(case["pred"] * 100)])
    n = case["n"]
    truth = rng.random(n) < case["truth"]
    pred = rng.random(n) < case["pred"]
    score = _scores(rng, n, case["scores"])
    found = m.binary_intervals(
        truth, pred, score, tuple(case["names"]), seed=case["seed"], draws=case["draws"]
    )
    return {name: None if v is None else list(v) for name, v in found.items()}


def _classification(case: dict[str, Any]) -> object:
    n, k, variant = case["n"], case["k"], case["variant"]
    rng = np.random.default_rng([n, k])
    truth = rng.integers(0, k - 1 if variant == "empty" else k, size=n)
    if variant == "oneclass":
        truth[:] = 1
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[truth]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if variant == "equal":
        proba = np.full((n, k), 1.0 / k)
    elif variant == "rounded":
        proba = np.round(proba, 2)
    classes = [f"c{i}" for i in range(k)]
    return m.classification_report(truth, proba, classes, seed=case["seed"], draws=case["draws"])


def _multilabel(case: dict[str, Any]) -> object:
    n, variant = case["n"], case["variant"]
    rng = np.random.default_rng([n, 99])
    rates = np.array(
        [0.5, 0.1, 0.0 if variant == "absent" else 0.3, 1.0 if variant == "absent" else 0.7]
    )
    truth = (rng.random((n, 4)) < rates).astype(np.float32)  # the task passes 0/1 floats
    proba = 1.0 / (1.0 + np.exp(-(rng.normal(size=(n, 4)) + 2.0 * truth - 1.0)))
    if variant == "rounded":
        proba = np.round(proba, 1)
    cut = [0.5, 0.3, 0.5, 0.7]
    return m.multilabel_report(
        truth, proba, ["w", "x", "y", "z"], cut, seed=case["seed"], draws=case["draws"]
    )


def _generic(case: dict[str, Any]) -> object:
    n = case["n"]
    rng = np.random.default_rng([n, 5])
    values = rng.normal(size=n)
    flags = rng.random(n) < 0.4

    def stat(idx: np.ndarray) -> dict[str, float | None]:
        drawn = flags[idx]
        return {
            "mean": float(values[idx].mean()),
            "flagged": float(values[idx][drawn].sum()) if drawn.any() else None,
        }

    found = m.bootstrap_intervals(
        stat, ("mean", "flagged"), n, seed=case["seed"], draws=case["draws"]
    )
    return {name: None if v is None else list(v) for name, v in found.items()}


def _strings(case: dict[str, Any]) -> object:
    n = case["n"]
    rng = np.random.default_rng([n, 7])
    exact = (rng.random(n) < 0.5).astype(np.float64)
    lengths = rng.integers(0, 9, size=n).astype(np.float64)
    edits = np.where(exact > 0, 0.0, rng.integers(1, 5, size=n)).astype(np.float64)
    found = string_intervals(exact, edits, lengths, seed=case["seed"], draws=case["draws"])
    return {name: None if v is None else list(v) for name, v in found.items()}


RUNNERS = {
    "binary": _binary,
    "classification": _classification,
    "multilabel": _multilabel,
    "generic": _generic,
    "strings": _strings,
}


def output(case: dict[str, Any]) -> str:
    """The case's output as JSON text (floats written exactly, as Python's repr)."""
    return json.dumps(RUNNERS[case["kind"]](case), sort_keys=True)


def main(path: str) -> None:
    lines = [json.dumps({"case": c, "out": json.loads(output(c))}, sort_keys=True) for c in cases()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
