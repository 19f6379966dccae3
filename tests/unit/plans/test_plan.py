"""The plan schema in code: per-round plans, the federation.toml round trip, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flsilo.format.tensorsets import RoundKind
from flsilo.plans import federation as fed
from flsilo.plans.federation import FederationConfig, HubPolicy
from flsilo.plans.plan import Plan, parse_schedule
from flsilo.runtime.errors import MalformedInputError, UsageError


def config(**changes: object) -> FederationConfig:
    base = {
        "federation": "fed",
        "model": "logreg",
        "classes": ("a", "b"),
        "input_shape": (4,),
        "schedule": parse_schedule("periodic:3", (4, 2, 1)),
        "plan": Plan(local_epochs=4, batch_size=8, lr=0.2, seed=10),
        "hub": HubPolicy(min_sites=2),
    }
    return FederationConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_each_round_changes_only_epochs_and_seed() -> None:
    c = config()
    assert c.plan_for_round(0) == c.plan
    assert c.plan_for_round(2) == replace(c.plan, local_epochs=1, seed=12)
    assert c.plan_for_round(3) is None  # the final package carries no plan


def test_the_plan_takes_its_epochs_from_the_schedule() -> None:
    c = config(plan=Plan(local_epochs=99, batch_size=8))
    assert c.plan.local_epochs == 4


def test_federation_toml_round_trips(tmp_path: Path) -> None:
    c = config(hub=HubPolicy(min_sites=3, strategy="trimmed-mean:0.1", max_staleness=1))
    fed.write(tmp_path / fed.FEDERATION_FILE, c)
    assert fed.load(tmp_path / fed.FEDERATION_FILE) == c
    assert type(fed.load(tmp_path / fed.FEDERATION_FILE).plan.kind) is RoundKind
    assert 'kind = "train"' in (tmp_path / fed.FEDERATION_FILE).read_text()


def test_invalid_settings_are_refused_on_construction() -> None:
    with pytest.raises(UsageError) as err:
        config(plan=Plan(local_epochs=1, batch_size=0))
    assert err.value.code == "bad-config" and "batch_size" in err.value.message


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda t: t.replace("[plan]\n", "[plan]\nlocal_epochs = 2\n"), "[schedule]"),
        (lambda t: t.replace("lr = 0.2", "lr = -1.0"), "lr > 0"),
        (lambda t: t.replace("min_sites = 2", "min_sites = 2\nquorum = 1"), "quorum"),
        (lambda t: t.replace("rounds = 3", "rounds = 2"), "one local-epoch value"),
        (lambda t: t.replace('kind = "train"', 'kind = "weights"'), "train, statistics, stats"),
    ],
)
def test_a_hand_edited_file_is_malformed_with_the_reason(tmp_path: Path, edit, why: str) -> None:
    path = tmp_path / fed.FEDERATION_FILE
    fed.write(path, config())
    path.write_text(edit(path.read_text()))
    with pytest.raises(MalformedInputError) as err:
        fed.load(path)
    assert err.value.code == "bad-federation" and why in err.value.message


def test_a_stats_schedule_is_round_zero_then_the_schedule_after_it() -> None:
    from flsilo.plans.plan import Plan, parse_schedule, plan_for_round, schedule_text

    schedule = parse_schedule("stats+closed-form+periodic:2", (3,))
    assert schedule.rounds == 4 and schedule.local_epochs == (1, 1, 3, 3)
    assert schedule_text(schedule) == "stats+closed-form+periodic:2"
    base = Plan(local_epochs=3, batch_size=8, seed=10)
    plans = [plan_for_round(base, schedule, r) for r in range(5)]
    assert [p.kind for p in plans if p] == ["stats", "statistics", "train", "train"]
    assert [p.kind for p in plans if p] == [
        RoundKind.FEDSTATS, RoundKind.STATISTICS, RoundKind.TRAIN, RoundKind.TRAIN
    ]  # fmt: skip
    assert [p.seed for p in plans if p] == [10, 11, 12, 13]
    assert plans[0] is not None and plans[0].val_fraction == 0.0
    assert plans[4] is None
