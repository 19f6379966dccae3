"""Two-pass robust rules, the weight-share cap and the norm gate, as pure functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flsilo.format.tensorfile import RawTensor, build_header
from flsilo.runtime.errors import UsageError
from hub_kit.inmemory import combine_states
from hub_kit.strategies import from_provenance, parse_strategy, strategy_text
from hub_kit.streaming import StreamInput, aggregate_stream, first_pass, run_two_pass
from hub_kit.weighting import cap_shares, norm_gate, shares
from tests.conftest import examples

RULES = [
    "multi-krum:1",
    "multi-krum:1,2",
    "norm-bound:0.5",
    "centered-clip:0.5",
    "geomedian",
    "median-of-means:3",
]


def update_gram(base: dict[str, np.ndarray], sites: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The Gram matrix of the sites' updates, by hand: U @ U.T over every element, in float64."""
    names = sorted(base)
    updates = np.stack(
        [
            np.concatenate([(s[n].astype(np.float64) - base[n]).ravel() for n in names])
            for s in sites
        ]
    )
    return updates @ updates.T


def _crowd(rng: np.random.Generator, k: int, n: int, attacker: float) -> np.ndarray:
    honest = rng.normal(1.0, 0.1, size=(k, n))
    honest[-1] = attacker * honest[-1]
    return honest


@pytest.mark.parametrize("rule", RULES)
def test_rules_keep_a_scaled_attacker_out(rule: str) -> None:
    updates = _crowd(np.random.default_rng(1), 5, 50, attacker=-100.0)
    out = combine_states(
        {"w": np.zeros(50)}, [{"w": u} for u in updates], [1.0] * 5, parse_strategy(rule)
    )
    honest_mean = updates[:-1].mean(axis=0)
    fedavg_error = np.linalg.norm(updates.mean(axis=0) - honest_mean)
    assert np.linalg.norm(out["w"] - honest_mean) < 0.1 * fedavg_error


@pytest.mark.parametrize("rule", RULES)
def test_identical_updates_give_that_update_or_a_clipped_one(rule: str) -> None:
    row = np.linspace(-0.01, 0.01, 20)
    out = combine_states(
        {"w": np.zeros(20)}, [{"w": row}] * 5, [1, 2, 3, 4, 5], parse_strategy(rule)
    )
    np.testing.assert_allclose(out["w"], row, rtol=1e-9, atol=1e-12)


def test_multi_krum_selects_by_score_and_weights_the_chosen() -> None:
    rng = np.random.default_rng(2)
    updates = _crowd(rng, 7, 30, attacker=50.0)
    gram = update_gram({"w": np.zeros(30)}, [{"w": u} for u in updates])
    c = parse_strategy("multi-krum:2,3").coefficients(gram, np.arange(1.0, 8.0))  # type: ignore[union-attr]
    assert c[-1] == 0 and np.count_nonzero(c) == 3 and c.sum() == pytest.approx(1)


def test_norm_bound_scales_each_update_to_c() -> None:
    gram = np.diag([4.0, 0.25])  # norms 2 and 0.5
    c = parse_strategy("norm-bound:1").coefficients(gram, np.ones(2))  # type: ignore[union-attr]
    np.testing.assert_allclose(c, [0.5 * 0.5, 0.5 * 1.0])


def test_geomedian_of_points_on_a_line_is_their_median() -> None:
    points = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    out = combine_states(
        {"w": np.zeros(1)}, [{"w": p} for p in points], [1.0] * 5, parse_strategy("geomedian")
    )
    assert out["w"][0] == pytest.approx(2.0, abs=1e-3)


def test_median_of_means_groups_consecutive_inputs() -> None:
    # groups {0,1} {2,3} {4,5}: the third group holds both attackers and is outvoted
    updates = np.array([[1.0], [1.2], [0.9], [1.1], [50.0], [60.0]])
    out = combine_states(
        {"w": np.zeros(1)},
        [{"w": u} for u in updates],
        [1.0] * 6,
        parse_strategy("median-of-means:3"),
    )
    assert 0.9 <= out["w"][0] <= 1.2


@pytest.mark.parametrize("rule", [*RULES, "fedavg", "trimmed-mean:0.2", "median"])
def test_rule_text_round_trips_through_the_provenance(rule: str) -> None:
    parsed = parse_strategy(rule)
    assert strategy_text(parsed) == rule
    rebuilt = from_provenance(parsed.name, parsed.params())
    assert rebuilt.params() == parsed.params()


def _write(path: Path, tensors: dict[str, np.ndarray]) -> StreamInput:
    raw = {n: RawTensor.from_numpy(a) for n, a in tensors.items()}
    header, infos = build_header({n: (t.dtype, t.shape) for n, t in raw.items()}, {})
    path.write_bytes(header + b"".join(bytes(raw[i.name].data) for i in infos))
    return StreamInput(path, len(header), 0.0)


@pytest.mark.parametrize("rule", RULES + ["fedavg", "median"])
def test_streaming_in_small_chunks_matches_the_in_memory_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule: str
) -> None:
    import hub_kit.streaming as streaming

    monkeypatch.setattr(streaming, "CHUNK_BUDGET_BYTES", 4096 * 8)  # many chunks per tensor
    rng = np.random.default_rng(3)
    base = {
        "w": rng.normal(size=9000).astype(np.float32),
        "b": rng.normal(size=7).astype(np.float32),
    }
    sites = [
        {
            n: (v + rng.normal(0, 0.1 * (10 if i == 4 else 1), v.shape)).astype(np.float32)
            for n, v in base.items()
        }
        for i in range(5)
    ]
    weights = [float(w) for w in rng.integers(10, 100, 5)]
    base_in = _write(tmp_path / "base.st", base)
    inputs = [
        StreamInput(_write(tmp_path / f"{i}.st", s).path, base_in.data_start, w)
        for i, (s, w) in enumerate(zip(sites, weights, strict=True))
    ]
    _, infos = build_header({n: ("F32", v.shape) for n, v in base.items()}, {})
    strategy = parse_strategy(rule)
    coefficients = None
    if hasattr(strategy, "coefficients"):
        gram = first_pass(infos, base_in, inputs)
        np.testing.assert_allclose(gram, update_gram(base, sites), rtol=1e-10)
        coefficients = run_two_pass(strategy, gram, np.array(weights))  # type: ignore[arg-type]
    out = bytearray()
    figures = aggregate_stream(infos, base_in, inputs, strategy, out.extend, coefficients)
    expected = combine_states(base, sites, weights, strategy)
    for info in infos:
        got = np.frombuffer(out, np.float32, count=info.numel, offset=info.begin)
        np.testing.assert_allclose(got, expected[info.name], rtol=1e-6, atol=1e-7)
    norms = [
        np.sqrt(sum(np.sum((s[n] - base[n]).astype(np.float64) ** 2) for n in base)) for s in sites
    ]
    np.testing.assert_allclose([f.update_norm for f in figures], norms, rtol=1e-9)
    assert max(figures, key=lambda f: f.update_norm) is figures[4]


@settings(max_examples=examples(50))
@given(
    st.lists(st.floats(1, 1e8), min_size=1, max_size=12),
    st.floats(0.01, 1.0),
)
def test_capped_shares_never_exceed_the_cap(weights: list[float], cap: float) -> None:
    if cap * len(weights) < 1 - 1e-12:  # the same tolerance as check_share_cap
        with pytest.raises(UsageError):
            cap_shares(weights, cap)
        return
    new, capped = cap_shares(weights, cap)
    share = shares(new)
    assert max(share) <= cap * (1 + 1e-9)
    assert sum(share) == pytest.approx(1.0)
    for w, n, c in zip(weights, new, capped, strict=True):
        assert c or n == w  # an uncapped site keeps its weight
    uncapped_shares = shares(weights)
    for s_new, s_old, c in zip(share, uncapped_shares, capped, strict=True):
        assert c or s_new >= s_old * (1 - 1e-9)  # clipping only ever raises the others


def test_norm_gate_flags_only_outliers() -> None:
    over, median = norm_gate([1.0, 1.1, 0.9, 1.2, 9.0], 3.0)
    assert median == 1.1 and over == [False, False, False, False, True]
    assert norm_gate([1.0, 3.0], 3.0)[0] == [False, False]
