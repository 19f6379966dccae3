"""Federation statistics: a site's sums and the hub's pooling equal the centralized figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flsilo.plans.plan import Plan
from flsilo.plans.preprocessing import Preprocess
from flsilo.runtime.errors import PolicyError
from hub_kit.fedstats import pooled_normalisation
from site_kit.data import Dataset
from site_kit.fedstats import input_statistics


def _data(x: np.ndarray) -> Dataset:
    return Dataset(x.astype(np.float32), np.zeros(len(x), dtype=np.int64))


def test_images_pool_per_channel_like_the_pooled_pixels() -> None:
    rng = np.random.default_rng(0)
    sites = [rng.uniform(size=(n, 3, 4, 5)) * (i + 1) for i, n in enumerate((7, 11, 3))]
    plan = Plan(local_epochs=1, batch_size=1)
    stats = [input_statistics(_data(x), plan, (3, 4, 5), Path("d")) for x in sites]
    assert stats[0]["stats.count"].tolist() == [7 * 20] * 3
    mean, std = pooled_normalisation(stats)
    pixels = np.concatenate([x.astype(np.float32) for x in sites]).astype(np.float64)
    pixels = pixels.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(mean, pixels.mean(1), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(1), rtol=1e-9)


def test_tables_count_missing_values_and_leave_constant_features_unscaled() -> None:
    x = np.array([[1.0, np.nan, 5.0], [3.0, 2.0, 5.0], [np.nan, 4.0, 5.0]])
    plan = Plan(local_epochs=1, batch_size=1, preprocess=Preprocess(impute="constant:0"))
    stats = input_statistics(_data(x), plan, (3,), Path("t.csv"))
    assert stats["stats.count"].tolist() == [2, 2, 3]
    assert stats["stats.missing"].tolist() == [1, 1, 0]
    mean, std = pooled_normalisation([stats])
    assert mean == (2.0, 3.0, 5.0)
    assert std == (1.0, 1.0, 1.0)  # the third feature is constant: std 1, not 0


def test_indicator_features_are_not_measured() -> None:
    plan = Plan(local_epochs=1, batch_size=1, preprocess=Preprocess(impute="mean,indicator"))
    stats = input_statistics(_data(np.ones((4, 2))), plan, (4,), Path("t.csv"))
    assert stats["stats.sum"].shape == (2,)


def test_a_site_below_the_minimum_cell_size_refuses() -> None:
    plan = Plan(local_epochs=1, batch_size=1, min_cell_size=5)
    with pytest.raises(PolicyError, match="4 samples"):
        input_statistics(_data(np.ones((4, 2))), plan, (2,), Path("t.csv"))
