"""``hub history --png``'s figure: whole-round ticks and the small-split warning under it."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from flsilo.cli.history_cmd import draw_history, pyplot  # noqa: E402
from hub_kit.history import RoundHistory, SiteRound, warnings  # noqa: E402
from hub_kit.report import Verdict  # noqa: E402


def _rounds(n: int, val_samples: int) -> list[RoundHistory]:
    return [
        RoundHistory(
            round=r,
            package=f"fed-r{r + 1:04d}.safetensors",
            sites=[
                SiteRound(
                    "site-a",
                    Verdict.ACCEPTED,
                    samples=240,
                    share=0.6,
                    val_samples=60,
                    primary_after=0.5 + 0.1 * r,
                ),
                SiteRound(
                    "site-b",
                    Verdict.ACCEPTED,
                    samples=160,
                    share=0.4,
                    val_samples=val_samples,
                    primary_after=0.4 + 0.1 * r,
                ),
            ],
        )  # fmt: skip
        for r in range(n)
    ]


@pytest.mark.parametrize("n", [1, 3])
def test_rounds_are_whole_ticks(n: int) -> None:
    fig = draw_history(_rounds(n, 60), [], "accuracy")
    try:
        (ax,) = fig.axes
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert set(range(n)) <= set(ticks)
        assert not fig.texts  # no warning: nothing written under the plot
    finally:
        pyplot().close(fig)


def test_a_small_validation_split_is_noted_under_the_plot() -> None:
    rounds = _rounds(2, 20)
    notes = warnings(rounds, 10)
    assert notes and notes[0].startswith("validation splits under 30 samples at site-b")
    fig = draw_history(rounds, notes, "accuracy")
    try:
        (text,) = fig.texts
        shown = text.get_text().replace("\n", " ")
        assert "validation splits under 30 samples at site-b" in shown
        assert "read trends, not values" in shown
    finally:
        pyplot().close(fig)
