"""flsilo.scoring.metrics against scikit-learn on the same predictions (AUROC, AP, F1 within 1e-9).

scikit-learn's figures come from scikit-learn itself in the slow tier (Hypothesis draws the
cases) and, in the default tier, for a fixed set of cases from a file the slow tier checks
against scikit-learn (``sklearn_figures``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flsilo.scoring import bootstrap
from flsilo.scoring import metrics as m
from tests.conftest import examples, needs
from tests.unit.scoring import sklearn_figures as skf

needs_sklearn = needs("sklearn", reason="scikit-learn (the demo extra) checks metrics")
RECORDED = skf.recorded()


def _assert_ranked(case: tuple[int, int, bool], sk: dict[str, float | None]) -> None:
    truth, score = skf.binary_case(*case)
    if sk["auroc"] is None:
        assert truth.min() == truth.max()
        assert m.auroc(truth, score) is None
        return
    assert m.auroc(truth, score) == pytest.approx(sk["auroc"], abs=1e-9)
    assert m.average_precision(truth, score) == pytest.approx(sk["ap"], abs=1e-9)


def _assert_counts(case: tuple[int, int], sk: dict[str, Any]) -> None:
    truth, pred, score = skf.count_case(*case)
    row = m.binary_metrics(truth, pred, score)
    assert (row.tp, row.fp, row.tn, row.fn) == (sk["tp"], sk["fp"], sk["tn"], sk["fn"])
    for name in ("sensitivity", "ppv", "specificity", "npv", "f1", "balanced_accuracy"):
        ours = getattr(row, name)
        if sk[name] is None:  # scikit-learn warns and substitutes a number: undefined here
            assert ours is None, name
        else:
            assert ours == pytest.approx(sk[name], abs=1e-9 if name == "f1" else 1e-12), name


def _assert_report(sk: dict[str, Any]) -> None:
    truth, proba = skf.report_case(*skf.REPORT_CASE)
    names = ["a", "b", "c", "d"]
    report = m.classification_report(truth, proba, names, seed=1, draws=200)
    assert report["confusion"] == sk["confusion"]
    assert report["balanced_accuracy"] == pytest.approx(sk["balanced_accuracy"], abs=1e-12)
    per_class = report["per_class"]
    assert isinstance(per_class, dict)
    for i, name in enumerate(names):
        row = per_class[name]
        assert row["f1"] == pytest.approx(sk["f1"][i], abs=1e-9)
        assert row["auroc"] == pytest.approx(sk["auroc"][i], abs=1e-9)
        assert row["ap"] == pytest.approx(sk["ap"][i], abs=1e-9)
        low, high = row["ci95"]["auroc"]
        assert low <= row["auroc"] <= high


@pytest.mark.parametrize("case", skf.RANKED_CASES)
def test_auroc_and_ap_equal_sklearns_recorded(case: tuple[int, int, bool]) -> None:
    _assert_ranked(case, RECORDED["ranked"][json.dumps(list(case))])


@pytest.mark.parametrize("case", skf.COUNT_CASES)
def test_binary_counts_and_rates_equal_sklearns_recorded(case: tuple[int, int]) -> None:
    _assert_counts(case, RECORDED["counts"][json.dumps(list(case))])


def test_classification_report_matches_sklearns_recorded_per_class() -> None:
    _assert_report(RECORDED["report"])


@needs_sklearn
@pytest.mark.slow
def test_recorded_figures_are_sklearns() -> None:
    assert skf.figures() == RECORDED


@needs_sklearn
@pytest.mark.slow
@settings(max_examples=examples(60))
@given(st.integers(0, 10_000), st.integers(2, 200), st.booleans())
def test_auroc_and_ap_equal_sklearn(seed: int, n: int, ties: bool) -> None:
    _assert_ranked((seed, n, ties), skf.ranked(seed, n, ties))


@needs_sklearn
@pytest.mark.slow
@settings(max_examples=examples(60))
@given(st.integers(0, 10_000), st.integers(1, 150))
def test_binary_counts_and_rates_equal_sklearn(seed: int, n: int) -> None:
    _assert_counts((seed, n), skf.counts(seed, n))


def test_bootstrap_is_seeded_and_skips_undefined_draws() -> None:
    truth = np.zeros(40, dtype=int)
    truth[25] = 1  # one positive, ranked among the negatives: absent from a third of draws
    score = np.linspace(0, 1, 40)

    def stat(idx: np.ndarray) -> float | None:
        return m.auroc(truth[idx], score[idx])

    def interval(statistic, seed: int):  # one figure alone
        found = m.bootstrap_intervals(
            lambda i: {"v": statistic(i)}, ("v",), 40, seed=seed, draws=300
        )
        return found["v"]

    first = interval(stat, 5)
    assert first == interval(stat, 5)
    # A positive is drawn in about 1 - (39/40)^40 = 64% of resamples: the interval exists,
    # and is built from those draws only (an undefined draw would have raised in percentile).
    assert first is not None and 0.0 < first[0] <= first[1] < 1.0
    assert first != interval(stat, 6)
    rare = np.zeros(40, dtype=int)
    rare[25] = 1

    def rare_stat(idx: np.ndarray) -> float | None:  # defined in under half the draws
        return m.auroc(rare[idx], score[idx]) if 25 in idx[:10] else None

    assert interval(rare_stat, 5) is None


def _per_resample(truth, pred, score, names, *, seed: int, draws: int):
    """The intervals by their definition: binary_metrics of each resample, one at a time."""

    def figures(idx: np.ndarray) -> dict[str, float | None]:
        row = m.binary_metrics(truth[idx], pred[idx], score[idx])
        return {name: getattr(row, name) for name in names}

    return m.bootstrap_intervals(figures, names, truth.size, seed=seed, draws=draws)


@pytest.mark.parametrize("n", [1, 2, 7, 40, 301])
def test_batched_intervals_are_the_per_resample_ones_bit_for_bit(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """binary_intervals computes a block of resamples at once; each interval is the float
    the one-resample-at-a-time definition gives, with ties, undefined draws and blocks
    (average precision exact for every resample), and all in one block (average precision
    exact where the percentiles read it)."""
    names = m.BINARY_FIELDS
    rng = np.random.default_rng(n)
    for case in range(6):
        truth = rng.random(n) < (0.5, 0.05, 0.0, 1.0, 0.3, 0.5)[case]
        pred = rng.random(n) < 0.4
        score = rng.random(n)
        if case in (1, 4):
            score = np.round(score, 1)  # many tied scores
        if case == 5:
            score[::3] = np.nan  # NaN ties with nothing: the per-resample path itself
        for draws in (1, 60):
            reference = repr(_per_resample(truth, pred, score, names, seed=case, draws=draws))
            one_block = m.binary_intervals(truth, pred, score, names, seed=case, draws=draws)
            assert repr(one_block) == reference, (case, draws)
            with monkeypatch.context() as patch:
                patch.setattr(bootstrap, "RESAMPLE_BLOCK", 7 * n + 3)  # split across blocks
                blocks = m.binary_intervals(truth, pred, score, names, seed=case, draws=draws)
            assert repr(blocks) == reference, (case, draws)


def test_expected_calibration_error_by_hand() -> None:
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.55, 0.55])
    correct = np.array([1, 0, 1, 1, 0, 0])
    # Bin (0.9333, 1]: acc 0.5 vs conf 0.95, 2 samples; bin (0.5333, 0.6]: 0.5 vs 0.55, 4.
    expected = (2 * 0.45 + 4 * 0.05) / 6
    assert m.expected_calibration_error(conf, correct) == pytest.approx(expected, abs=1e-12)
    assert m.expected_calibration_error(np.ones(3), np.ones(3)) == 0.0


def test_multilabel_thresholds_per_finding() -> None:
    truth = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    proba = np.array([[0.6, 0.2], [0.4, 0.7], [0.9, 0.35], [0.1, 0.1]])
    report = m.multilabel_report(truth, proba, ["x", "y"], [0.5, 0.3], draws=0)
    rows = report["per_class"]
    assert isinstance(rows, dict)
    assert (rows["x"]["tp"], rows["x"]["fp"]) == (2, 0)
    assert (rows["y"]["tp"], rows["y"]["fn"]) == (2, 0)
    assert report["exact_match"] == 1.0


def test_small_cells_are_withheld() -> None:
    truth = np.array([0] * 20 + [1] * 2)
    proba = np.c_[np.linspace(1, 0, 22), np.linspace(0, 1, 22)]
    report = m.suppress_small_cells(
        m.classification_report(truth, proba, ["neg", "pos"], draws=0), min_cell_size=5
    )
    per_class = report["per_class"]
    assert isinstance(per_class, dict)
    assert per_class["pos"]["sensitivity"] is None and per_class["pos"]["positives"] is None
    assert all(c is None or c == 0 or c >= 5 for row in report["confusion"] for c in row)


def test_small_detection_cells_are_withheld() -> None:
    """A detection report's per-class object counts (and the AP built on them) below the
    minimum cell size are withheld, as a classifier's counts are."""
    report = {
        "samples": 30,
        "map50": 0.8,
        "objects": 23,
        "per_class": {"car": {"ap50": 0.9, "objects": 20}, "bus": {"ap50": 0.7, "objects": 3}},
    }
    out = m.suppress_small_cells(report, min_cell_size=5)
    assert out["per_class"] == {
        "car": {"ap50": 0.9, "objects": 20},
        "bus": {"ap50": None, "objects": None},
    }
    # the total goes too: 23 less car's 20 would give bus's 3 back
    assert (out["map50"], out["objects"]) == (0.8, None)
    big = m.suppress_small_cells(report, min_cell_size=3)
    assert big["objects"] == 23 and big["per_class"]["bus"]["objects"] == 3
    assert m.suppress_small_cells(report, min_cell_size=30)["objects"] is None
    assert report["per_class"]["bus"]["objects"] == 3  # the input is not changed
