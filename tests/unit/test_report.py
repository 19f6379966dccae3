"""The round report's rows: verdicts as an enum, printed and written as before."""

from __future__ import annotations

import json
from pathlib import Path

from hub_kit.report import AggregateReport, Shortfall, SiteRow, Verdict


def _row(site: str, verdict: Verdict, late: int = 0) -> SiteRow:
    return SiteRow(
        site, f"{site}.safetensors", verdict, None, None, None, 10, 10.0, None, None, late=late
    )


def _report(*rows: SiteRow) -> AggregateReport:
    return AggregateReport(
        0, Path("p"), None, "fedavg", rows, ("site-z",), None, None, False,
        shortfall=Shortfall(3, "wait"),
    )  # fmt: skip


def test_a_late_bundle_is_accepted_and_says_by_how_much() -> None:
    late = _row("site-a", Verdict.ACCEPTED, late=2)
    assert late.accepted and late.verdict_text == "accepted (late by 2)"
    doc = late.to_dict()
    assert doc["verdict"] == "accepted (late by 2)" and "late" not in doc
    assert _row("site-b", Verdict.SKIPPED).to_dict()["verdict"] == "skipped"


def test_counts_and_the_shortfall_line_use_the_verdicts() -> None:
    report = _report(
        _row("site-a", Verdict.ACCEPTED),
        _row("site-b", Verdict.ACCEPTED, late=1),
        _row("site-c", Verdict.REJECTED),
        _row("-", Verdict.SKIPPED),
    )
    assert (report.accepted, report.rejected) == (2, 1)
    error = report.shortfall_error()
    assert error is not None
    assert error.message == "only 2 of the 3 required bundles verified for round 0; missing: site-z"
    rows = json.loads(json.dumps(report.to_dict()))["rows"]
    assert [r["verdict"] for r in rows] == [
        "accepted",
        "accepted (late by 1)",
        "rejected",
        "skipped",
    ]
