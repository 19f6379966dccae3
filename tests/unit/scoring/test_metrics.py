"""flsilo.scoring.metrics against scikit-learn on the same predictions (AUROC, AP, F1 within 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flsilo.scoring import bootstrap
from flsilo.scoring import metrics as m
from tests.conftest import needs

pytestmark = needs("sklearn", reason="scikit-learn (the demo extra) checks metrics")


def sklearn_metrics():  # imported by the tests that use it: 1 s of CPU in every xdist worker
    import sklearn.metrics

    return sklearn.metrics


def _binary_case(draw_seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(draw_seed)
    truth = rng.integers(0, 2, size=n)
    score = rng.random(n)
    if ties:
        score = np.round(score, 1)  # many tied scores: the hard case for both curves
    return truth, score


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 200), st.booleans())
def test_auroc_and_ap_equal_sklearn(seed: int, n: int, ties: bool) -> None:
    sk = sklearn_metrics()
    truth, score = _binary_case(seed, n, ties)
    if truth.min() == truth.max():
        assert m.auroc(truth, score) is None
        return
    assert m.auroc(truth, score) == pytest.approx(sk.roc_auc_score(truth, score), abs=1e-9)
    assert m.average_precision(truth, score) == pytest.approx(
        sk.average_precision_score(truth, score), abs=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 150))
def test_binary_counts_and_rates_equal_sklearn(seed: int, n: int) -> None:
    sk = sklearn_metrics()
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, size=n)
    pred = rng.integers(0, 2, size=n)
    row = m.binary_metrics(truth, pred, rng.random(n))
    tn, fp, fn, tp = sk.confusion_matrix(truth, pred, labels=[0, 1]).ravel()
    assert (row.tp, row.fp, row.tn, row.fn) == (tp, fp, tn, fn)
    if tp + fn:
        assert row.sensitivity == pytest.approx(sk.recall_score(truth, pred), abs=1e-12)
    else:
        assert row.sensitivity is None
    if tp + fp:
        assert row.ppv == pytest.approx(sk.precision_score(truth, pred), abs=1e-12)
    else:
        assert row.ppv is None
    if tn + fp:
        assert row.specificity == pytest.approx(
            sk.recall_score(truth, pred, pos_label=0), abs=1e-12
        )
    if tn + fn:
        assert row.npv == pytest.approx(sk.precision_score(truth, pred, pos_label=0), abs=1e-12)
    if 2 * tp + fp + fn:
        assert row.f1 == pytest.approx(sk.f1_score(truth, pred), abs=1e-9)
    else:
        assert row.f1 is None
    if tp + fn and tn + fp:
        assert row.balanced_accuracy == pytest.approx(
            sk.balanced_accuracy_score(truth, pred), abs=1e-12
        )


def test_classification_report_matches_sklearn_per_class() -> None:
    sk = sklearn_metrics()
    rng = np.random.default_rng(3)
    n, k = 300, 4
    truth = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[truth]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    names = ["a", "b", "c", "d"]
    report = m.classification_report(truth, proba, names, seed=1, draws=200)
    assert report["confusion"] == sk.confusion_matrix(truth, pred, labels=range(k)).tolist()
    assert report["balanced_accuracy"] == pytest.approx(
        sk.balanced_accuracy_score(truth, pred), abs=1e-12
    )
    f1 = sk.f1_score(truth, pred, average=None, labels=range(k))
    auc = sk.roc_auc_score(truth, proba, multi_class="ovr", average=None)
    per_class = report["per_class"]
    assert isinstance(per_class, dict)
    for i, name in enumerate(names):
        row = per_class[name]
        assert row["f1"] == pytest.approx(f1[i], abs=1e-9)
        assert row["auroc"] == pytest.approx(auc[i], abs=1e-9)
        assert row["ap"] == pytest.approx(
            sk.average_precision_score(truth == i, proba[:, i]), abs=1e-9
        )
        low, high = row["ci95"]["auroc"]
        assert low <= row["auroc"] <= high


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
