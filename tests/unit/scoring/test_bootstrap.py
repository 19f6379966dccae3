"""flsilo.scoring.bootstrap: the pieces that keep the vectorised intervals bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from flsilo.scoring import bootstrap


def test_row_sums_are_each_runs_own_np_sum() -> None:
    """Summed many runs at once, each run gives the float np.sum gives it alone: runs of
    every length up to past numpy's pairwise blocks (8, 128), values whose sum depends on
    the order of the additions."""
    rng = np.random.default_rng(0)
    lengths = np.r_[np.arange(0, 140), [255, 256, 257, 700, 1500], rng.integers(0, 300, 200)]
    rng.shuffle(lengths)
    values = rng.normal(size=int(lengths.sum())) * 10.0 ** rng.integers(-8, 8, int(lengths.sum()))
    sums = bootstrap.row_sums(values, lengths)
    starts = np.cumsum(lengths) - lengths
    alone = [np.sum(values[s : s + k]) for s, k in zip(starts, lengths, strict=True)]
    assert sums.tobytes() == np.array(alone, dtype=np.float64).tobytes()
    assert bootstrap.row_sums(values[:0], lengths[:0]).size == 0


@pytest.mark.parametrize("count", [1, 2, 5, 40, 501, 1000])
def test_exact_values_near_the_percentiles_give_the_exact_percentiles(count: int) -> None:
    """Values known within a tolerance, made exact where near_percentiles says, give the
    percentiles of the exact values, bit for bit, even among many ties and near-ties."""
    rng = np.random.default_rng(count)
    tolerance = 1e-9
    for case in range(20):
        exact = rng.random(count)
        if case % 2:
            exact = np.round(exact, 2)  # many equal values
        if case % 3 == 0:
            exact[: count // 2] = exact[0] + rng.integers(-2, 3, count // 2) * tolerance / 4
        rough = exact + rng.uniform(-tolerance / 2, tolerance / 2, count)
        near = bootstrap.near_percentiles(rough, tolerance)
        mended = rough.copy()
        mended[near] = exact[near]
        assert bootstrap.percentiles({"v": mended}, count) == bootstrap.percentiles(
            {"v": exact}, count
        ), case
        if count >= 40 and case % 2 == 0 and case % 3:
            assert near.sum() < count // 4  # only values near the percentiles
    assert not bootstrap.near_percentiles(np.zeros(0), 1e-9).any()


def test_resamples_are_one_stream_however_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = np.concatenate(list(bootstrap.resamples(13, seed=4, draws=50)))
    monkeypatch.setattr(bootstrap, "RESAMPLE_BLOCK", 13 * 7)
    blocks = list(bootstrap.resamples(13, seed=4, draws=50))
    assert len(blocks) == 8 and whole.shape == (50, 13)
    assert np.array_equal(np.concatenate(blocks), whole)
    rng = np.random.default_rng(4)
    assert np.array_equal(whole, np.stack([rng.integers(0, 13, size=13) for _ in range(50)]))


def test_percentiles_of_figures_together_are_each_ones_alone() -> None:
    """Figures with as many defined values share one np.percentile call, a row each: each
    interval is the one np.percentile gives the figure's values alone."""
    rng = np.random.default_rng(9)
    for count in (500, 501, 777, 999, 1000):
        values = {
            "a": rng.random(count),
            "b": np.round(rng.random(count), 1),
            "c": rng.normal(size=count) * 1e-7,
            "d": rng.random(count - 1),  # another count: its own call
            "e": np.full(count, 0.5),
            "f": rng.random(count // 3),  # under half the draws: no interval
        }
        found = bootstrap.percentiles(values, count)
        assert list(found) == list(values) and found["f"] is None
        for name in "abcde":
            alone = np.percentile(values[name], [2.5, 97.5])
            assert repr(found[name]) == repr((float(alone[0]), float(alone[1]))), (count, name)
