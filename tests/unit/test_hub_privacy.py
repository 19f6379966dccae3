"""The hub's check that a site's reported privacy spending never goes back (a reset ledger)."""

from __future__ import annotations

import pytest

from flsilo.format.manifest import BundleInfo, DPReport
from flsilo.plans.plan import Plan
from hub_kit.events import Accept
from hub_kit.privacy import DPAccepted, dp_spent, went_back


def bundle(rounds: int, total: float) -> BundleInfo:
    dp = DPReport("rdp", 1e-5, 1.0, 0.1, 10, min(total, 0.5), total, rounds)
    return BundleInfo(
        "site-a", "0" * 64, 100, Plan(local_epochs=1, batch_size=10), None, None, dp=dp
    )


def accepted(round_: int, total: float, rounds: int | None) -> DPAccepted:
    return DPAccepted.of(
        Accept(
            round=round_,
            site="site-a",
            sha256="0" * 64,
            file="b.safetensors",
            samples=100,
            weight=100.0,
            base_round=round_,
            dp_epsilon_total=total,
            dp_rounds=rounds,
        )
    )


HISTORY = (accepted(0, 1.0, 1), accepted(1, 1.8, 2))


@pytest.mark.parametrize(
    ("rounds", "total", "needle"),
    [
        (1, 2.0, "reports 1 private round, but"),  # the ledger deleted: one round again
        (2, 2.0, "at least 2 before this one"),
        (3, 1.7, "less than the 1.800 it reported"),  # the ledger edited: less epsilon
    ],
)
def test_a_report_below_the_accepted_history_is_named(rounds: int, total: float, needle) -> None:
    problem = went_back(bundle(rounds, total), 2, HISTORY)
    assert problem is not None and needle in problem


def test_an_honest_report_and_later_rounds_pass() -> None:
    assert went_back(bundle(3, 2.4), 2, HISTORY) is None
    assert went_back(bundle(1, 1.0), 0, HISTORY) is None  # nothing earlier than round 0
    # a late bundle of round 1 (staleness) is compared only with round 0's
    assert went_back(bundle(2, 1.8), 1, HISTORY) is None
    assert dp_spent(HISTORY) == 1.8 and dp_spent(()) is None


def test_old_accept_events_without_rounds_still_count_their_number() -> None:
    """Logs written before accept events kept dp_rounds: every accept was one round."""
    old = (accepted(0, 1.0, None), accepted(1, 1.8, None))
    assert "at least 2 before" in (went_back(bundle(2, 2.4), 2, old) or "")
    assert went_back(bundle(3, 2.4), 2, old) is None
