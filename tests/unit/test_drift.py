"""hub_kit.drift: a site whose inputs look unlike the others' is flagged, with what differs."""

from __future__ import annotations

from flsilo.format.manifest import InputSummary
from hub_kit.drift import drift_flags


def _site(mean: float, std: float = 0.25, bright: int = 3, size: int = 2) -> InputSummary:
    brightness = tuple(100 if i == bright else 0 for i in range(8))
    sizes = tuple(100 if i == size else 0 for i in range(6))
    return InputSummary(100, (mean,), (std,), brightness, sizes)


def test_sites_that_preprocess_alike_are_not_flagged() -> None:
    flags = drift_flags({"a": _site(0.30), "b": _site(0.33), "c": _site(0.28)})
    assert not any(d.flagged for d in flags.values())
    assert all(d.distance is not None and d.distance < 1 for d in flags.values())


def test_an_inverted_site_is_flagged_as_brighter() -> None:
    flags = drift_flags({"a": _site(0.3), "b": _site(0.31), "c": _site(0.7, bright=5)})
    assert flags["c"].flagged and not flags["a"].flagged
    assert "c's images are brighter" in flags["c"].hint and "the others'" in flags["c"].hint


def test_larger_stored_images_are_named() -> None:
    flags = drift_flags({"a": _site(0.3), "b": _site(0.3), "c": _site(0.3, size=5)})
    assert flags["c"].flagged and "larger" in flags["c"].hint


def test_a_threshold_per_federation() -> None:
    sites = {"a": _site(0.30), "b": _site(0.30), "c": _site(0.45)}
    assert not drift_flags(sites)["c"].flagged
    assert drift_flags(sites, threshold=0.3)["c"].flagged


def test_a_bundle_without_a_summary_says_why() -> None:
    flags = drift_flags({"a": None, "b": _site(0.3)})
    assert flags["a"].flagged is False and flags["a"].distance is None
    assert "DP federation" in flags["a"].hint
    assert "no other site's summary" in flags["b"].hint


def test_summaries_of_other_widths_are_compared_only_with_their_like() -> None:
    """An earlier flsilo summarised an npz of images per value (64 here), a folder per channel."""
    per_value = InputSummary(100, (0.3,) * 64, (0.2,) * 64, (), ())
    flags = drift_flags(
        {"a": _site(0.30), "b": _site(0.31), "c": per_value, "d": _site(0.7, bright=5)}
    )
    assert flags["d"].flagged and "the other site's" not in flags["d"].hint
    assert flags["c"].flagged is False and flags["c"].distance is None
    assert "not comparable: this summary has 64 channels or features" in flags["c"].hint
    assert "the other sites' 1 " in flags["c"].hint
    two = drift_flags({"a": _site(0.3), "c": per_value})
    assert all(d.distance is None and "not comparable" in d.hint for d in two.values())
