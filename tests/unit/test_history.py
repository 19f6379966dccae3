"""hub_kit.history: accept and reject events folded into one record per round, each site's
verdict the report's Verdict; what --json and the card show is the text the log's rounds
always gave (checked on a log written before the verdicts were typed)."""

from __future__ import annotations

import json
from pathlib import Path

from hub_kit.eventlog import EventLog
from hub_kit.history import SiteRound, history, to_jsonable
from hub_kit.report import Verdict

LOG = Path(__file__).resolve().parents[1] / "fixtures" / "eventlog" / "events.jsonl"
SITE_KEYS = {
    "site", "verdict", "samples", "share", "accuracy_before", "accuracy_after",
    "loss_before", "val_samples", "primary_before", "primary_after",
}  # fmt: skip


def test_a_logged_round_folds_into_typed_verdicts_shown_as_before() -> None:
    (rnd,) = history(EventLog(LOG).read())
    assert [(s.site, s.verdict, s.code) for s in rnd.sites] == [
        ("site-a", Verdict.ACCEPTED, None),
        ("site-b", Verdict.ACCEPTED, None),
        ("site-c", Verdict.REJECTED, "bad-signature"),
    ]
    assert rnd.val_samples == 50  # the accepted sites' 30 + 20; the rejected one has none
    assert sum(s.share or 0.0 for s in rnd.sites) == 1.0
    (shown,) = json.loads(json.dumps(to_jsonable([rnd], 3)))
    assert [set(s) for s in shown["sites"]] == [SITE_KEYS] * 3  # no new key in --json
    assert [s["verdict"] for s in shown["sites"]] == [
        "accepted",
        "accepted",
        "rejected: bad-signature",
    ]


def test_a_site_round_shows_its_verdict_and_code_as_one_text() -> None:
    rejected = SiteRound("site-a", Verdict.REJECTED, code="wrong-federation")
    accepted = SiteRound("site-b", Verdict.ACCEPTED, samples=10, share=1.0, val_samples=7)
    assert not rejected.accepted and accepted.accepted
    assert rejected.verdict_text == "rejected: wrong-federation"
    assert accepted.verdict_text == "accepted"
    assert rejected.to_dict()["verdict"] == "rejected: wrong-federation"
    assert "code" not in rejected.to_dict()
