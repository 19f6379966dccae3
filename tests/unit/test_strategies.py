"""Aggregation invariants (property-based) and the streaming aggregator against a reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flsilo.format.tensorfile import RawTensor, build_header
from flsilo.runtime.errors import UsageError
from hub_kit.strategies import parse_strategy
from hub_kit.streaming import StreamInput, aggregate_stream
from tests.conftest import examples

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def stacks(draw):
    k = draw(st.integers(1, 7))
    n = draw(st.integers(1, 20))
    values = draw(hnp.arrays(np.float64, (k, n), elements=finite))
    weights = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.5, 1000)))
    return values, weights


def run(name: str, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return parse_strategy(name).combine([v.copy() for v in values], weights.copy())


@settings(max_examples=examples(40))
@given(stacks(), st.sampled_from(["fedavg", "mean", "median", "trimmed-mean:0.2"]))
def test_results_lie_within_the_inputs(stack, name) -> None:
    values, weights = stack
    out = run(name, values, weights)
    tol = 1e-9 * (1 + np.abs(values).max())
    assert np.all(out >= values.min(axis=0) - tol) and np.all(out <= values.max(axis=0) + tol)


@settings(max_examples=examples(30))
@given(
    st.integers(1, 6),
    hnp.arrays(np.float64, 10, elements=finite),
    st.sampled_from(["fedavg", "mean", "median", "trimmed-mean:0.3"]),
)
def test_identical_inputs_give_that_input(k, row, name) -> None:
    out = run(name, np.tile(row, (k, 1)), np.arange(1, k + 1, dtype=np.float64))
    np.testing.assert_allclose(out, row, rtol=1e-12, atol=1e-9)


@settings(max_examples=examples(30))
@given(stacks())
def test_fedavg_is_the_weighted_mean(stack) -> None:
    values, weights = stack
    np.testing.assert_allclose(
        run("fedavg", values, weights), weights @ values / weights.sum(), rtol=1e-9, atol=1e-6
    )


@settings(max_examples=examples(30))
@given(stacks())
def test_trimmed_mean_with_zero_beta_is_the_mean(stack) -> None:
    values, weights = stack
    np.testing.assert_allclose(
        run("trimmed-mean:0", values, weights), run("mean", values, weights), rtol=1e-9, atol=1e-6
    )


def test_median_ignores_a_wild_minority() -> None:
    values = np.array([[1.0, 2.0], [1.1, 2.1], [1e9, -1e9]])
    np.testing.assert_allclose(run("median", values, np.ones(3)), [1.1, 2.0])


@pytest.mark.parametrize(
    "bad",
    [
        "fedsgd",
        "trimmed-mean:0.5",
        "trimmed-mean:x",
        "median:1",
        "multi-krum",
        "multi-krum:-1",
        "multi-krum:1,0",
        "multi-krum:1.5",
        "norm-bound:0",
        "norm-bound:inf",
        "centered-clip:-2",
        "geomedian:3",
        "median-of-means:0",
        "median-of-means:2,3",
    ],
)
def test_unknown_strategies(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_strategy(bad)


def _write(path: Path, tensors: dict[str, np.ndarray]) -> int:
    raw = {n: RawTensor.from_numpy(a) for n, a in tensors.items()}
    header, infos = build_header({n: (t.dtype, t.shape) for n, t in raw.items()}, {})
    path.write_bytes(header + b"".join(bytes(raw[i.name].data) for i in infos))
    return len(header)


@settings(max_examples=examples(12))
@given(st.integers(1, 5), st.integers(1, 3000), st.data())
def test_streaming_matches_an_in_memory_reference(tmp_path_factory, k, n, data) -> None:
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    models = [
        {"w": rng.normal(size=n).astype(np.float32), "steps": rng.integers(0, 50, size=3)}
        for _ in range(k)
    ]
    weights = rng.uniform(1, 100, size=k)
    base_start = _write(root / "base.st", models[0])
    base = StreamInput(root / "base.st", base_start, 0.0)
    inputs = []
    for i, m in enumerate(models):
        start = _write(root / f"{i}.st", m)
        inputs.append(StreamInput(root / f"{i}.st", start, float(weights[i])))
    _, infos = build_header({"w": ("F32", (n,)), "steps": ("I64", (3,))}, {})
    out = bytearray()
    import hub_kit.streaming as streaming

    old = streaming.CHUNK_BUDGET_BYTES
    streaming.CHUNK_BUDGET_BYTES = 4096 * 8  # force many chunks
    try:
        aggregate_stream(infos, base, inputs, parse_strategy("fedavg"), out.extend)
    finally:
        streaming.CHUNK_BUDGET_BYTES = old
    by_name = {i.name: i for i in infos}
    w = np.frombuffer(out, np.float32, count=n, offset=by_name["w"].begin)
    expected = (
        weights @ np.stack([m["w"].astype(np.float64) for m in models]) / weights.sum()
    ).astype(np.float32)
    np.testing.assert_array_equal(w, expected)
    steps = np.frombuffer(out, np.int64, count=3, offset=by_name["steps"].begin)
    np.testing.assert_array_equal(steps, np.max([m["steps"] for m in models], axis=0))
