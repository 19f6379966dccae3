"""hub history's warnings: small validation splits, accuracy at chance, a stalled loss."""

from __future__ import annotations

from hub_kit.history import (
    RoundHistory,
    SiteRound,
    at_chance,
    chance_classes,
    stalled_since,
    warnings,
)
from hub_kit.report import Verdict


def _round(r: int, accuracy: float, loss: float, val: int = 200) -> RoundHistory:
    sites = [
        SiteRound(
            site=name,
            verdict=Verdict.ACCEPTED,
            samples=1000,
            accuracy_after=accuracy,
            loss_before=loss,
            val_samples=val,
        )
        for name in ("site-a", "site-b")
    ]
    return RoundHistory(round=r, sites=sites)


def test_a_learning_federation_gets_no_warning() -> None:
    rounds = [_round(r, 0.6 + 0.05 * r, 1.0 - 0.1 * r) for r in range(5)]
    assert warnings(rounds, num_classes=3) == []


def test_accuracy_at_chance_is_flagged_with_what_to_check() -> None:
    rounds = [_round(r, 0.34, 1.1) for r in range(2)]
    assert at_chance(rounds[0], 3)
    (note, *_) = warnings(rounds, num_classes=3)
    assert "accuracy at chance (1 in 3) after round 0, 1" in note
    assert "check-data --preview" in note


def test_chance_allows_for_small_validation_splits() -> None:
    # 45% on 20 samples of a 3-class problem is within two standard errors of 33%.
    assert at_chance(_round(0, 0.45, 1.0, val=10), 3)
    assert not at_chance(_round(0, 0.45, 1.0, val=5000), 3)


def test_small_validation_splits_are_named() -> None:
    notes = warnings([_round(0, 0.9, 0.3, val=12)], num_classes=2)
    assert any("under 30 samples at site-a, site-b" in n for n in notes)
    assert any("their accuracy moves by several points" in n for n in notes)


def test_a_small_split_names_the_tasks_figure() -> None:
    """A detection or multilabel history says which figure a small split makes noisy (the
    sites report no accuracy there)."""
    (note,) = warnings([_round(0, 0.9, 0.3, val=12)], num_classes=0, metric="map50")
    assert "their mAP@0.5 moves by several points" in note and "accuracy" not in note


def test_a_loss_that_stopped_falling_is_flagged_from_its_best_round() -> None:
    losses = [1.0, 0.6, 0.5, 0.52, 0.55]
    rounds = [_round(r, 0.8, loss) for r, loss in enumerate(losses)]
    assert stalled_since(rounds) == 2
    assert any("has not fallen since round 2" in n for n in warnings(rounds, 10))
    assert stalled_since(rounds[:4]) is None  # one round without a new low is patience


def test_chance_is_checked_for_single_label_tasks_only() -> None:
    # a multilabel federation's figure is per finding (AUROC), detection's mAP, a sequence's
    # exact match: "1 in K" means nothing there, so aggregate and the card do not claim it
    rounds = [_round(r, 0.25, 1.1) for r in range(2)]
    assert (
        "accuracy at chance (1 in 2)" in warnings(rounds, chance_classes("classify", ["a", "b"]))[0]
    )
    for task, classes in (("multilabel", ["effusion", "nodule"]), ("detect", ["car", "person"])):
        assert warnings(rounds, chance_classes(task, classes)) == []
