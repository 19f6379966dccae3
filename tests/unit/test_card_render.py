"""The model card's wording: the final package's note under --require-evaluations."""

from __future__ import annotations

from hub_kit.card_render import _final_note


def test_final_note_says_site_or_sites_by_the_count() -> None:
    final = {"final": True}
    one = _final_note(final, {"final": False, "required": 1, "sites": []})
    assert "NOT final: 0 of the 1 required site's evaluation reports on it verify" in one
    two = _final_note(final, {"final": False, "required": 2, "sites": ["site-a"]})
    assert "NOT final: 1 of the 2 required sites' evaluation reports on it verify" in two
    assert _final_note(final, {"final": True, "required": 1, "sites": ["a"]}) == " (final)"
    assert _final_note({"final": False}, {"final": False, "required": 1, "sites": []}) == ""
