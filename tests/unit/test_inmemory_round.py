"""Simulate's hub round is the streaming aggregator: Fisher merge and server state included."""

from __future__ import annotations

import io

import numpy as np

from flsilo.format.tensorfile import read_header
from hub_kit.inmemory import aggregate_in_memory
from hub_kit.server_optimizers import fedavgm_step, make_server_optimizer
from hub_kit.strategies import parse_strategy
from hub_kit.strategies.math import fisher_weighted_mean


def _models(rng: np.random.Generator, k: int) -> list[dict[str, np.ndarray]]:
    return [
        {
            "w": rng.normal(size=(3, 4)).astype(np.float32),
            "b": rng.normal(size=3).astype(np.float32),
        }
        for _ in range(k)
    ]


def test_fisher_round_in_memory_is_the_elementwise_fisher_mean() -> None:
    rng = np.random.default_rng(0)
    base, *sites = _models(rng, 4)
    fishers = [{k: np.abs(v) for k, v in m.items()} for m in _models(rng, 3)]
    weights = [10.0, 20.0, 30.0]
    out = aggregate_in_memory(base, sites, weights, parse_strategy("fedavg"), fishers=fishers)
    for name in base:
        want = fisher_weighted_mean(
            [s[name].astype(np.float64).ravel() for s in sites],
            [f[name].astype(np.float64).ravel() for f in fishers],
            np.array(weights),
        )
        np.testing.assert_array_equal(out.arrays[name].ravel(), want.astype(np.float32))
    assert out.server_state is None


def test_fedavgm_two_rounds_carry_state_bytes_like_a_state_file() -> None:
    rng = np.random.default_rng(1)
    base, *sites = _models(rng, 3)
    opt = make_server_optimizer("fedavgm", lr=1.0, momentum=0.5)
    first = aggregate_in_memory(base, sites, [1.0, 1.0], parse_strategy("mean"), server=opt)
    assert first.server_state is not None
    header, _ = read_header(io.BytesIO(first.server_state), len(first.server_state), "state")
    assert {t.name for t in header.tensors} == {"m.w", "m.b"}
    second = aggregate_in_memory(
        first.arrays,
        sites,
        [1.0, 1.0],
        parse_strategy("mean"),
        server=opt,
        server_state=first.server_state,
    )
    for name in base:
        avg = (sites[0][name].astype(np.float64) + sites[1][name]) / 2
        x1, m1 = fedavgm_step(base[name].astype(np.float64), avg - base[name], 0 * avg, 1.0, 0.5)
        x1 = x1.astype(np.float32).astype(np.float64)
        m1 = m1.astype(np.float32).astype(np.float64)  # the state file holds F32
        x2, _ = fedavgm_step(x1, avg - x1, m1, 1.0, 0.5)
        np.testing.assert_array_equal(second.arrays[name], x2.astype(np.float32))
