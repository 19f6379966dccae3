"""Bootstrap intervals and reports give, to the bit, the outputs recorded before they were
computed all resamples at once (``tests/fixtures/metrics/reference.jsonl``, see
``metrics_cases``): signed evaluation reports and model cards carry these numbers."""

from __future__ import annotations

import json

import pytest

from flsilo.scoring import metrics as m
from tests.unit.scoring import metrics_cases as mc


def _recorded() -> dict[str, tuple[dict, str]]:
    lines = mc.REFERENCE.read_text(encoding="utf-8").splitlines()
    out = {}
    for line in lines:
        entry = json.loads(line)
        out[mc.case_id(entry["case"])] = (entry["case"], json.dumps(entry["out"], sort_keys=True))
    return out


RECORDED = _recorded()


def test_every_case_is_recorded() -> None:
    assert [mc.case_id(c) for c in mc.cases()] == list(RECORDED)
    assert len(RECORDED) > 120


@pytest.mark.parametrize("kind", sorted(mc.RUNNERS))
def test_outputs_are_the_recorded_ones_to_the_bit(kind: str) -> None:
    cases = [(case, text) for case, text in RECORDED.values() if case["kind"] == kind]
    assert cases
    differ = [mc.case_id(case) for case, text in cases if mc.output(case) != text]
    assert not differ, differ


def test_blocks_of_resamples_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """However the resamples are split into blocks, each interval is the recorded one."""
    chosen = [
        (case, text)
        for case, text in RECORDED.values()
        if case["kind"] in ("binary", "strings", "generic") and 40 <= case["n"] <= 301
    ]
    assert len(chosen) > 20
    for block in (1, 997, 5000):
        monkeypatch.setattr(m, "RESAMPLE_BLOCK", block)
        differ = [mc.case_id(case) for case, text in chosen if mc.output(case) != text]
        assert not differ, (block, differ)
