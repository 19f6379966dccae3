"""Cosines to the coordinate-wise median update, streamed in chunks by both passes."""

from __future__ import annotations

import numpy as np
import pytest

from hub_kit import cosines, streaming
from hub_kit.inmemory import lay_out
from hub_kit.strategies import parse_strategy


def _direct(base: np.ndarray, sites: list[np.ndarray]) -> list[float]:
    updates = np.stack([s.astype(np.float64) - base.astype(np.float64) for s in sites])
    median = np.median(updates, axis=0)
    return [float(u @ median / np.linalg.norm(u) / np.linalg.norm(median)) for u in updates]


@pytest.mark.parametrize("budget", [streaming.CHUNK_BUDGET_BYTES, 4096 * 8 * 12])
def test_cosines_match_the_whole_vectors_in_any_chunking(
    budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "CHUNK_BUDGET_BYTES", budget)
    rng = np.random.default_rng(3)
    base = rng.normal(size=30_000).astype(np.float32)
    honest = rng.normal(size=30_000)
    sites = [(base + honest + rng.normal(0, 0.3, 30_000)).astype(np.float32) for _ in range(4)]
    sites.append((base - 5 * honest).astype(np.float32))  # sign-flipped and boosted
    laid = [lay_out({"w": s}) for s in sites]
    first = streaming.measure(
        lay_out({"w": base}).tensors,
        lay_out({"w": base}).stream(0.0),
        [x.stream(1.0) for x in laid],
        pairwise=False,
        median=True,
    )
    got = first.cosines()
    assert got == pytest.approx(_direct(base, sites), abs=1e-9)
    assert got[-1] is not None and got[-1] < -0.9 and all(c > 0.9 for c in got[:-1])  # type: ignore[operator]
    # the aggregation measures the same cosines (chunked differently) in its own pass
    out = bytearray()
    figures = streaming.aggregate_stream(
        lay_out({"w": base}).tensors,
        lay_out({"w": base}).stream(0.0),
        [x.stream(1.0) for x in laid],
        parse_strategy("fedavg"),
        out.extend,
    )
    assert [f.cosine for f in figures] == pytest.approx(got, abs=1e-9)


def test_a_zero_update_has_no_cosine() -> None:
    base = np.ones(10, dtype=np.float32)
    laid = [lay_out({"w": base}), lay_out({"w": base + 1}), lay_out({"w": base + 2})]
    first = streaming.measure(
        laid[0].tensors, laid[0].stream(0.0), [x.stream(1.0) for x in laid], median=True
    )
    assert first.cosines() == [None, pytest.approx(1.0), pytest.approx(1.0)]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16, 17, 20])
def test_the_median_is_numpys_for_any_number_of_sites(k: int) -> None:
    rng = np.random.default_rng(k)
    updates = [rng.normal(size=257) for _ in range(k)]
    updates[0][:5] = updates[-1][:5]  # ties
    expected = np.median(np.stack(updates), axis=0)
    assert np.array_equal(cosines.median_update(updates), expected)


def test_a_large_models_report_samples_every_sth_element_and_the_gate_sees_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cosines, "MEDIAN_SAMPLE", 1000)
    monkeypatch.setattr(streaming, "CHUNK_BUDGET_BYTES", 4096 * 8 * 12)
    rng = np.random.default_rng(5)
    shapes = {"a.weight": (70, 100), "b.bias": (3001,)}  # 10001 floats: every 10th
    base = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    sites = [
        {n: (v + rng.normal(size=v.shape)).astype(np.float32) for n, v in base.items()}
        for _ in range(5)
    ]
    laid_base = lay_out(base)
    assert cosines.median_stride(laid_base.tensors) == 10
    flat = [np.concatenate([s[t.name].ravel() for t in laid_base.tensors]) for s in sites]
    flat_base = np.concatenate([base[t.name].ravel() for t in laid_base.tensors])
    expected = _direct(flat_base[::10], [f[::10] for f in flat])
    inputs = [lay_out(s).stream(1.0) for s in sites]
    first = streaming.measure(
        laid_base.tensors, laid_base.stream(0.0), inputs, pairwise=False, median=True
    )  # the gate's pass: every element
    assert first.cosines() == pytest.approx(_direct(flat_base, flat), abs=1e-9)
    figures = streaming.aggregate_stream(
        laid_base.tensors,
        laid_base.stream(0.0),
        inputs,
        parse_strategy("median"),
        bytearray().extend,
    )
    assert [f.cosine for f in figures] == pytest.approx(expected, abs=1e-9)
