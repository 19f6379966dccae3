"""The warning when one site holds most of a round's weight and no share cap is set."""

from __future__ import annotations

from hub_kit.weighting import NO_CAP_AT_INIT, dominant_share_warning


def test_one_site_above_half_without_a_cap_is_named_with_a_suggested_cap() -> None:
    warning = dominant_share_warning(["site-a", "site-b", "site-c"], [900, 50, 50], None)
    assert warning is not None
    assert warning.startswith("site-a holds 90% of this round's weight")
    assert "no --max-weight-share is set" in warning and "--max-weight-share 0.4" in warning


def test_no_warning_with_a_cap_at_or_below_half_or_for_one_site() -> None:
    assert dominant_share_warning(["a", "b"], [900, 50], 0.6) is None  # the cap is the policy
    assert dominant_share_warning(["a", "b"], [50, 50], None) is None  # exactly half
    assert dominant_share_warning(["a", "b", "c"], [40, 30, 30], None) is None
    assert dominant_share_warning(["a"], [100], None) is None  # nobody to outweigh
    assert dominant_share_warning([], [], None) is None


def test_a_sites_bundles_are_summed() -> None:
    """Two bundles of one site (a late one and a current one) count as that site's weight."""
    warning = dominant_share_warning(["a", "a", "b"], [30, 30, 40], None)
    assert warning is not None and warning.startswith("a holds 60%")


def test_the_init_warning_says_what_the_cap_means_and_suggests_one() -> None:
    assert "--max-weight-share 0.4" in NO_CAP_AT_INIT and "sample count" in NO_CAP_AT_INIT


def test_init_warns_only_for_federations_with_weight_rounds() -> None:
    from flsilo.plans.federation import FederationConfig, HubPolicy
    from flsilo.plans.plan import Plan, parse_schedule
    from hub_kit.setup import init_warnings

    def config(schedule: str, cap: float | None = None) -> FederationConfig:
        return FederationConfig(
            federation="fed",
            model="logreg",
            classes=("a", "b"),
            input_shape=(4,),
            schedule=parse_schedule(schedule, (1,)),
            plan=Plan(local_epochs=1, batch_size=8),
            hub=HubPolicy(max_weight_share=cap),
        )

    assert init_warnings(config("periodic:3")) == [NO_CAP_AT_INIT]
    assert init_warnings(config("closed-form+periodic:2")) == [NO_CAP_AT_INIT]
    assert init_warnings(config("periodic:3", cap=0.5)) == []
    assert init_warnings(config("closed-form")) == []  # one exact sum, no weights
