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


def test_a_multilabel_card_names_its_primary_metric() -> None:
    """The sites' table and the rounds' column show the mean AUROC as a number, named; a
    classify card keeps its accuracy columns."""
    from hub_kit.card_render import _evaluation_section, _rounds_section

    def doc(task: str, figures: dict) -> dict:
        site = {"site": "site-a", "verdict": "accepted", "samples": 40}
        return {
            "federation": {"task": task},
            "evaluations": [{"round": 1, "site": "site-a", "samples": 30, "metrics": figures}],
            "rounds": [{"round": 0, "sites": [site], "accuracy_after": 0.5, "primary_after": 0.5}],
        }

    ml = doc("multilabel", {"exact_match": 0.4, "mean_auroc": 0.9412})
    _, rows, header = _evaluation_section(ml)
    assert header == ["package", "site", "samples", "mean AUROC"] and rows[0][3] == "0.941"
    _, rows, header = _rounds_section(ml)
    assert header is not None and header[3] == "site val. mean AUROC" and rows[0][3] == "0.500"
    classify = doc("classify", {"accuracy": 0.5, "balanced_accuracy": 0.5, "ece": 0.1})
    _, rows, header = _evaluation_section(classify)
    assert header is not None and header[3] == "accuracy" and rows[0][3] == "50.0%"
    _, rows, header = _rounds_section(classify)
    assert header is not None and header[3] == "site val. acc." and rows[0][3] == "50.0%"


def test_the_rounds_plot_keeps_a_round_whose_figure_is_zero() -> None:
    """A round whose sites report 0.0 (a detector's mAP@0.5 early on) is a point on the
    validation plot, not a round without a figure."""
    import pytest

    pytest.importorskip("matplotlib")
    from hub_kit.card_render import plots

    def doc(after: float | None) -> dict:
        rounds = [{"round": 0, "sites": [], "primary_after": after}]
        return {"federation": {"task": "detect"}, "evaluations": [], "rounds": rounds}

    assert "validation-per-round" in plots(doc(0.0))
    assert "validation-per-round" in plots(doc(0.25))
    assert plots(doc(None)) == {}


def test_a_detection_card_shows_each_class_ap_and_objects() -> None:
    """A detection report's per-class rows carry AP@0.5 and the object count, not a
    classifier's sensitivity or AUROC: the card shows those (a withheld class as '–')."""
    from hub_kit.card_render import _per_class_section

    per_class = {"car": {"ap50": 0.8125, "objects": 20}, "bus": {"ap50": None, "objects": None}}
    doc = {
        "federation": {"task": "detect"},
        "package": {"round": 2},
        "evaluations": [{"round": 2, "site": "site-a", "metrics": {"per_class": per_class}}],
    }
    _, rows, header = _per_class_section(doc)
    assert header == ["site", "class", "objects", "AP@0.5"]
    assert rows == [["site-a", "car", "20", "0.812"], ["site-a", "bus", "–", "–"]]


def test_hub_claims_show_the_figures_the_task_has() -> None:
    """A detection claim's table shows mAP@0.5 and mAP@0.5:0.95, not a classifier's
    balanced accuracy and ECE columns (always blank for it); a classify claim's is as before."""
    from hub_kit.card_render import _claims_section

    def claims(task: str, figures: dict) -> list[dict]:
        claim = {"task": task, "figures": figures, "samples": 6, "test_set_records": 6}
        return [{"round": 1, "hub_claim": claim | {"test_set_sha256": "ab" * 32}}]

    _, rows, header = _claims_section(claims("detect", {"map50": 0.5, "map": 0.25, "loss": 2.0}))
    assert header == ["package", "test set records (index)", "samples", "mAP@0.5", "mAP@0.5:0.95"]
    assert rows[0][3:] == ["0.500", "0.250"]
    figures = {"accuracy": 0.9, "balanced_accuracy": 0.85, "ece": 0.05, "loss": 0.3}
    _, rows, header = _claims_section(claims("classify", figures))
    assert header[3:] == ["accuracy", "balanced acc.", "ECE"]
    assert rows[0][3:] == ["90.0%", "85.0%", "0.050"]


def test_the_plan_table_counts_one_round_in_the_singular() -> None:
    """A one-shot federation's card reads "one-shot (1 round)", a longer one "(3 rounds)"."""
    from hub_kit.card_render import _plan_rows

    def schedule(kind: str, rounds: int) -> str:
        fed = {"schedule": {"kind": kind, "rounds": rounds, "local_epochs": [1]}}
        return dict(_plan_rows(fed, {}))["schedule"]

    assert schedule("one-shot", 1) == "one-shot (1 round)"
    assert schedule("few-shot", 3) == "few-shot (3 rounds)"


def test_the_rounds_table_splits_accepted_and_rejected_sites() -> None:
    """card.json's verdict text (the history's): accepted sites with their samples, each
    rejected one with its code."""
    from hub_kit.card_render import _rounds_section

    sites = [
        {"site": "site-a", "verdict": "accepted", "samples": 40},
        {"site": "site-c", "verdict": "rejected: bad-signature", "samples": None},
    ]
    doc = {"federation": {"task": "classify"}, "rounds": [{"round": 0, "sites": sites}]}
    _, rows, _ = _rounds_section(doc)
    assert rows == [["0", "site-a 40", "site-c (rejected: bad-signature)", "–"]]  # no figure


def test_the_cards_commands_say_how_many_reports_they_leave_out() -> None:
    """The stock commands check three archived reports; a card with more says so."""
    from hub_kit.card_render import commands

    def doc(reports: int) -> dict:
        evaluations = [{"archive": f"evaluations/r{i}.json"} for i in range(reports)]
        return {
            "audit": {"trust_root": {"fingerprint": "SHA256:x"}},
            "package": {"file": "fed-r0001.safetensors", "sha256": "ab"},
            "evaluations": evaluations,
        }

    assert not any("and the same" in line for line in commands(doc(3)))
    assert "# and the same for the other 2 reports above" in commands(doc(5))
