"""Bootstrap intervals and reports give, to the bit, the outputs recorded before they were
computed all resamples at once (``tests/fixtures/metrics/reference.jsonl``, see
``metrics_cases``): signed evaluation reports and model cards carry these numbers."""

from __future__ import annotations

import json

import pytest

from flsilo.scoring import bootstrap
from tests.unit.scoring import metrics_cases as mc


def _recorded() -> dict[str, tuple[dict, str]]:
    lines = mc.REFERENCE.read_text(encoding="utf-8").splitlines()
    out = {}
    for line in lines:
        entry = json.loads(line)
        out[mc.case_id(entry["case"])] = (entry["case"], json.dumps(entry["out"], sort_keys=True))
    return out


RECORDED = _recorded()


def _large(case: dict) -> bool:  # a thousand resamples of a thousand samples or more
    return case["n"] * case["draws"] > 400_000


def test_every_case_is_recorded() -> None:
    assert [mc.case_id(c) for c in mc.cases()] == list(RECORDED)
    assert len(RECORDED) > 120


def _differ(cases: list[tuple[dict, str]]) -> list[str]:
    return [mc.case_id(case) for case, text in cases if mc.output(case) != text]


@pytest.mark.parametrize("kind", sorted(mc.RUNNERS))
def test_outputs_are_the_recorded_ones_to_the_bit(kind: str) -> None:
    cases = [(c, t) for c, t in RECORDED.values() if c["kind"] == kind and not _large(c)]
    assert cases
    assert not _differ(cases)


@pytest.mark.slow
def test_large_outputs_are_the_recorded_ones_to_the_bit() -> None:
    cases = [(c, t) for c, t in RECORDED.values() if _large(c)]
    assert len(cases) == 2
    assert not _differ(cases)


def _blocked(case: dict) -> bool:
    return case["kind"] in ("binary", "strings", "generic") and case["draws"] >= 100


@pytest.mark.slow
def test_blocks_of_resamples_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """However the resamples are split into blocks (each computed at once, average
    precision exactly for every resample then), each interval is the recorded one."""
    chosen = [(c, t) for c, t in RECORDED.values() if _blocked(c) and 9 <= c["n"] <= 301]
    assert len(chosen) > 20
    for case, text in chosen:
        monkeypatch.setattr(bootstrap, "RESAMPLE_BLOCK", case["n"] * (case["draws"] // 3) + 5)
        assert mc.output(case) == text, mc.case_id(case)


def test_blocks_of_resamples_change_nothing_small(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on a few small cases, one of them one resample a block."""
    chosen = [(c, t) for c, t in RECORDED.values() if _blocked(c) and 9 <= c["n"] <= 40]
    assert len(chosen) > 8
    for case, text in chosen[::3]:
        monkeypatch.setattr(bootstrap, "RESAMPLE_BLOCK", case["n"] * (case["draws"] // 3) + 5)
        assert mc.output(case) == text, mc.case_id(case)
    monkeypatch.setattr(bootstrap, "RESAMPLE_BLOCK", 1)
    case, text = next((c, t) for c, t in chosen if c["kind"] == "binary")
    assert mc.output({**case, "draws": 100}) != text  # fewer draws, other intervals
    assert mc.output(case) == text
