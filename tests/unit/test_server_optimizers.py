"""The server optimizers' pure update rules (Hsu et al. 2019; Reddi et al. 2021)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flsilo.runtime.errors import UsageError
from hub_kit.server_optimizers import (
    fedadam_step,
    fedavgm_step,
    fedyogi_step,
    make_server_optimizer,
)

floats = st.lists(st.floats(-10, 10), min_size=1, max_size=8)


@given(floats, floats)
def test_fedavgm_without_momentum_at_lr_1_is_fedavg(x: list[float], avg: list[float]) -> None:
    n = min(len(x), len(avg))
    xs, ys = np.array(x[:n]), np.array(avg[:n])
    out, m = fedavgm_step(xs, ys - xs, np.zeros(n), lr=1.0, momentum=0.0)
    np.testing.assert_allclose(out, ys, atol=1e-12)
    np.testing.assert_allclose(m, ys - xs)


@given(floats, st.floats(0.0, 5.0))
def test_adaptive_second_moments_stay_positive(deltas: list[float], v0: float) -> None:
    d = np.array(deltas)
    v = np.full(len(d), v0 + 1e-6)
    for rule in (fedadam_step, fedyogi_step):
        _, _, v_new = rule(np.zeros(len(d)), d, np.zeros(len(d)), v, 0.01, 0.9, 0.99, 1e-3)
        assert (v_new > 0).all()


def test_first_adam_step_moves_each_weight_by_about_the_lr() -> None:
    # Reddi et al.: no bias correction, v starts at tau^2, so step 1 is ~ lr * sign(delta)
    opt = make_server_optimizer("fedadam", lr=0.01)
    delta = np.array([5.0, -0.2, 1e-4])
    x_new, _ = opt.step(np.zeros(3), delta, {s: opt.initial(s, 3) for s in opt.slots})
    assert np.sign(x_new).tolist() == [1.0, -1.0, 1.0]
    assert np.all(np.abs(x_new[:2]) < 0.01) and np.all(np.abs(x_new[:2]) > 0.009)


@pytest.mark.parametrize(
    "kwargs",
    [{"name": "adam"}, {"name": "fedadam", "lr": 0.0}, {"name": "fedyogi", "betas": (0.9,)}],
)
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(UsageError) as err:
        make_server_optimizer(**kwargs)
    assert err.value.code == "bad-server-optimizer"
