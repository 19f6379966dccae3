"""The hub's claims (flsilo.signing.claims, hub_kit.hubeval): built from the evaluation figures,
carried in a package manifest only when made (older packages' bytes unchanged), and the
audit's agreement check between the package's copy and the log's."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from flsilo.format import manifest as mf
from flsilo.plans.plan import Schedule
from flsilo.scoring.metrics import classification_report
from flsilo.signing.claims import (
    CLASS_FIGURES,
    HubEvaluation,
    claim_from_report,
    figure_key,
    lead_figure,
)
from hub_kit.hubeval import claim_field, claim_problem

DATA = "ab" * 32


def _made(figures: dict, task: str, records: int, data_format: str, **given: Any) -> HubEvaluation:
    """``claim_from_report`` on ``figures`` with this file's fixed test-set provenance."""
    fixed: dict[str, Any] = {"loss": 0.5, "test_set_sha256": "cd" * 32, "data_sha256": DATA,
                                "skipped": 0, "seed": 3, "draws": 50, "software": {"flsilo": "t"}}  # fmt: skip
    return claim_from_report(
        figures, task=task, test_set_records=records, data_format=data_format,
        **(fixed | given),
    )  # fmt: skip


def _claim() -> HubEvaluation:
    truth = np.array([0, 0, 1, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.5, 0.5]])
    figures = classification_report(truth, proba, ("a", "b"), seed=3, draws=50)
    return _made(figures, "classify", 6, "npz", values={"accuracy": 5 / 6})


def _package(claim: HubEvaluation | None) -> mf.PackageInfo:
    return mf.PackageInfo(
        schedule=Schedule("one-shot", 1, (1,)),
        final=True,
        plan=None,
        parent_sha256=None,
        provenance=None,
        hub_evaluation=claim,
    )


def test_claim_carries_figures_only() -> None:
    claim = _claim()
    assert claim.samples == 6 and claim.accuracy == 5 / 6
    assert claim.figures["loss"] == 0.5
    assert claim.confusion == ((3, 0), (1, 2))  # a tie goes to the first class
    assert set(claim.per_class) == {"a", "b"}
    assert claim.ci95["a"]["sensitivity"] is not None


def test_manifest_omits_an_absent_claim_and_round_trips_a_made_one() -> None:
    assert "hub_evaluation" not in mf.to_jsonable(_package(None))
    data = json.loads(json.dumps(mf.to_jsonable(_package(_claim()))))
    back = mf.from_jsonable(mf.PackageInfo, data)
    assert back.hub_evaluation == _claim()
    assert mf.from_jsonable(mf.PackageInfo, mf.to_jsonable(_package(None))).hub_evaluation is None


def test_audit_check_needs_both_copies_equal() -> None:
    claim = _claim()
    logged = json.loads(json.dumps(claim_field(_package(claim))))
    assert claim_field(_package(None)) is None
    assert claim_problem(None, _package(None), DATA) is None
    assert claim_problem(logged, _package(claim), DATA) is None
    assert "lacks" in str(claim_problem(None, _package(claim), DATA))
    assert "the package lacks" in str(claim_problem(logged, _package(None), DATA))
    other = dataclasses.replace(claim, figures=claim.figures | {"accuracy": 1.0})
    assert "differs" in str(claim_problem(mf.to_jsonable(other), _package(claim), DATA))
    assert "other tensors" in str(claim_problem(logged, _package(claim), "ef" * 32))


def _multilabel_claim() -> dict:
    claim = mf.to_jsonable(_claim())
    claim["task"] = "multilabel"
    claim["figures"] = {"exact_match": 0.5, "mean_auroc": 0.912, "auroc.a": 0.9, "loss": 0.3}
    return claim


def test_a_claim_leads_with_its_tasks_primary_figure() -> None:
    """inspect, aggregate's report and the model card show a multilabel claim's mean AUROC
    (it has no accuracy), and a classify claim's accuracy as before."""
    from flsilo.cli.inspect_cmd import _claim_rows
    from flsilo.cli.round_report import hub_claim_line
    from hub_kit.card_render import _claims_section

    ml = _multilabel_claim()
    assert _claim_rows(ml)[0][1].startswith("mean AUROC 0.912 on the hub's test set")
    assert "): mean AUROC 0.912, loss 0.3000" in hub_claim_line(mf.from_jsonable(HubEvaluation, ml))
    _, rows, header = _claims_section([{"round": 1, "hub_claim": ml}])
    assert header is not None and header[3] == "mean AUROC" and rows[0][3] == "0.912"
    classify = mf.to_jsonable(_claim())
    assert _claim_rows(classify)[0][1].startswith("accuracy 83.3%, balanced accuracy")
    _, rows, header = _claims_section([{"round": 1, "hub_claim": classify}])
    assert header is not None and header[3] == "accuracy" and rows[0][3] == "83.3%"


SHAPES = ("circle", "square", "triangle")


def _detect_claim(min_cell_size: int, dp: float = 0.0) -> HubEvaluation:
    """A detection claim from the detector's own figures (its evaluator, fed boxes): three
    circles, one triangle, no square in the hub's test set."""
    from flsilo.plans.plan import Plan
    from flsilo.signing.evalreport import shareable_figures
    from flsilo.tasks.detect import DetectEvaluator

    scorer = DetectEvaluator(SHAPES)
    box = np.array([[0.1, 0.1, 0.4, 0.4]])
    for truth in (0, 0, 0, 2):  # each image: one object, found where it is
        scorer.meter.add(box, np.array([truth]), box, np.array([0.9]), np.array([truth]))
        scorer.n += 1
    done = scorer.finish()
    assert done.figures is not None
    plan = Plan(local_epochs=1, batch_size=8, min_cell_size=min_cell_size, task="detect",
                dp_noise_multiplier=dp)  # fmt: skip
    shared = shareable_figures(done.figures, SHAPES, plan, "map50")
    return _made(shared, "detect", 4, "yolo", values=dict(done.values), loss=done.loss,
                 primary="map50")  # fmt: skip


def test_a_detection_claim_keeps_each_class_ap_and_says_which_has_no_boxes() -> None:
    """A detector's claim carries, per class, what the sites' detection reports carry: AP@0.5
    and the boxes in the test set. A class without boxes is 0 boxes (its AP undefined), not a
    row of blank classifier figures; no interval is claimed where none is computed."""
    claim = _detect_claim(0)
    assert claim.per_class == {"circle": {"ap50": pytest.approx(1.0)}, "square": {"ap50": None},
                               "triangle": {"ap50": pytest.approx(1.0)}}  # fmt: skip
    assert claim.objects == {"circle": 3, "square": 0, "triangle": 1}
    assert claim.ci95 == {} and claim.primary_metric == ""  # a built-in's is known
    assert claim.figures["map50"] == pytest.approx(1.0)
    data = json.loads(json.dumps(mf.to_jsonable(_package(claim))))
    assert data["hub_evaluation"]["objects"] == {"circle": 3, "square": 0, "triangle": 1}
    assert mf.from_jsonable(mf.PackageInfo, data).hub_evaluation == claim
    assert claim_problem(claim_field(_package(claim)), _package(claim), DATA) is None


def test_a_detection_claim_withholds_a_small_class_as_site_reports_do() -> None:
    """Under the plan's minimum cell size (2): the triangle's one box and its AP are withheld
    (null), as in a site's report; the circles' (3) and the square's none stay."""
    claim = _detect_claim(2)
    assert claim.objects == {"circle": 3, "square": 0, "triangle": None}
    assert claim.per_class["triangle"] == {"ap50": None} and claim.per_class["circle"]["ap50"]
    dp = _detect_claim(0, dp=1.0)  # whole-set figures only: no rows, no box counts
    assert dp.per_class == {} and dp.objects == {} and "objects" not in mf.to_jsonable(dp)
    assert set(dp.figures) == {"map50", "map", "accuracy", "loss"}


def test_an_earlier_detection_claim_still_reads_and_agrees() -> None:
    """A detection claim written before (each class a row of blank classifier figures, no
    box counts) reads as it was, and the audit's check of it is unchanged."""
    old = mf.to_jsonable(_detect_claim(0))
    del old["objects"]
    old["per_class"] = {name: dict.fromkeys(CLASS_FIGURES) for name in SHAPES}
    old["ci95"] = {name: dict.fromkeys(CLASS_FIGURES) for name in SHAPES}
    read = mf.from_jsonable(HubEvaluation, json.loads(json.dumps(old)))
    assert read.objects == {} and read.per_class["square"]["sensitivity"] is None
    assert mf.to_jsonable(read) == old
    assert claim_problem(old, _package(read), DATA) is None


def _plugin_claim(primary: str) -> HubEvaluation:
    return dataclasses.replace(
        _claim(),
        task="mypkg.tasks:TASK",
        figures={"accuracy": 0.8, "macro_f1": 0.61, "top1": 0.8, "loss": 0.5},
        primary_metric=primary,
    )


def test_a_plugin_tasks_claim_leads_with_the_figure_its_task_names() -> None:
    """The claim of a plug-in task names its primary figure (its task scored it at the hub):
    inspect, aggregate's line and the card lead with it, not with an accuracy it also holds.
    One written before claims named it leads with its first figure by key."""
    from flsilo.cli.inspect_cmd import _claim_rows
    from flsilo.cli.round_report import hub_claim_line
    from hub_kit.card_render import _claims_section

    claim = _plugin_claim("macro_f1")
    data = mf.to_jsonable(claim)
    assert data["primary_metric"] == "macro_f1"
    assert lead_figure(data) == ("macro_f1", 0.61)
    assert _claim_rows(data)[0][1].startswith("macro_f1 0.610 on the hub's test set")
    assert "): macro_f1 0.610, loss 0.5000" in hub_claim_line(claim)
    _, rows, header = _claims_section([{"round": 1, "hub_claim": data}])
    assert header is not None and header[3] == "macro_f1" and rows[0][3] == "0.610"
    assert mf.from_jsonable(HubEvaluation, json.loads(json.dumps(data))) == claim
    earlier = mf.to_jsonable(_plugin_claim(""))
    assert "primary_metric" not in earlier and lead_figure(earlier) == ("accuracy", 0.8)
    earlier["figures"] = {"top1": 0.8, "macro_f1": 0.61, "loss": 0.5}
    assert lead_figure(earlier) == ("macro_f1", 0.61)  # never an accuracy it does not hold
    assert "primary_metric" not in mf.to_jsonable(_claim())  # a built-in's bytes unchanged
    # the card's column: the figure a claim names, though an earlier claim came first
    first = mf.to_jsonable(_plugin_claim(""))  # leads with accuracy, its first by key
    both = [{"round": 1, "hub_claim": first}, {"round": 2, "hub_claim": data}]
    _, rows, header = _claims_section(both)
    assert header is not None and header[3] == "macro_f1"
    assert [r[3] for r in rows] == ["0.610", "0.610"]


def test_figure_key_reads_the_report_alone() -> None:
    assert figure_key("detect", {"accuracy": 0.5, "map50": 0.2}) == "map50"
    assert figure_key("classify", {}) == "accuracy"
    assert figure_key("classify", {"accuracy": 0.5, "ece": 0.1}, "ece") == "accuracy"
    assert figure_key("p.m:T", {"accuracy": 0.5, "f1": 0.2}, "f1") == "f1"
    assert figure_key("p.m:T", {"samples": 9, "loss": 0.1, "ok": True, "ci95": {}}) is None
    assert figure_key("p.m:T", {"samples": 9, "zeta": 0.1, "beta": 2}) == "beta"


def test_a_dp_federation_shares_a_plugins_primary_figure_with_the_whole_set_figures() -> None:
    """In a DP federation a report (or claim) carries only figures over the whole set: the
    built-in ones, and a plug-in task's primary figure (one too), never per-class rows."""
    from flsilo.plans.plan import Plan
    from flsilo.signing.evalreport import shareable_figures, task_fields

    dp = Plan(local_epochs=1, batch_size=8, dp_noise_multiplier=1.0, task="p.m:T")
    full = {"samples": 9, "accuracy": 0.5, "macro_f1": 0.4, "top1": 0.5, "per_class": {}}
    assert shareable_figures(full, ("a", "b"), dp, "macro_f1") == {
        "samples": 9, "accuracy": 0.5, "macro_f1": 0.4}  # fmt: skip
    assert shareable_figures(full, ("a", "b"), dp) == {"samples": 9, "accuracy": 0.5}
    assert task_fields("p.m:T", "macro_f1") == {"primary_metric": "macro_f1"}
    assert task_fields("detect", "map50") == {}


def _scored_multilabel_claim(plan_fields: dict) -> tuple[HubEvaluation, dict]:
    """A multilabel claim as aggregate --eval makes it (sim_kit.hubeval): finding ``b`` has
    one positive in the hub's 40 records."""
    from flsilo.plans.plan import Plan
    from flsilo.scoring.metrics import auroc, multilabel_report
    from flsilo.signing.evalreport import shareable_figures, shareable_values

    rng = np.random.default_rng(0)
    truth = (rng.random((40, 2)) < 0.5).astype(float)
    truth[:, 1] = 0
    truth[0, 1] = 1
    proba = rng.random((40, 2))
    full = multilabel_report(truth, proba, ("a", "b"), (0.5, 0.5), seed=1, draws=20)
    values = {"exact_match": 0.3, "mean_auroc": 0.5}
    values |= {f"auroc.{n}": auroc(truth[:, j] > 0.5, proba[:, j]) for j, n in enumerate("ab")}
    plan = Plan(local_epochs=1, batch_size=8, task="multilabel", **plan_fields)
    shared = shareable_figures(full, ("a", "b"), plan, "mean_auroc")
    claim = _made(shared, "multilabel", 40, "csv", seed=1, draws=20,
                  values=shareable_values(values, shared, ("a", "b"), plan, "mean_auroc"))  # fmt: skip
    return claim, values


def test_a_claim_withholds_a_findings_auroc_where_its_row_does() -> None:
    """The claim's flat figures follow the sites' reports' rules: a finding under the minimum
    cell size has its ``auroc.NAME`` null, as its row's AUROC is (the row withholds it); in
    a DP federation only the whole-set figures are claimed, no finding's AUROC."""
    claim, values = _scored_multilabel_claim({"min_cell_size": 5})
    assert claim.per_class["b"]["auroc"] is None and claim.figures["auroc.b"] is None
    assert claim.figures["auroc.a"] == values["auroc.a"] == claim.per_class["a"]["auroc"]
    dp, _ = _scored_multilabel_claim({"dp_noise_multiplier": 1.0})
    assert set(dp.figures) == {"exact_match", "mean_auroc", "ece", "loss"}
    assert dp.per_class == {} and dp.ci95 == {} and dp.confusion == ()
    data = mf.to_jsonable(dp)
    assert mf.from_jsonable(HubEvaluation, json.loads(json.dumps(data))) == dp


def test_a_plugins_flat_figures_of_a_withheld_class_and_a_table_as_primary_stay_home() -> None:
    """A plug-in's report (its flat values beside its figures): a withheld class's
    ``FIGURE.NAME`` is null too; in a DP federation a primary figure that is not a number
    (a plug-in naming a table) is not let out."""
    from flsilo.plans.plan import Plan
    from flsilo.signing.evalreport import shareable_figures

    plan = Plan(local_epochs=1, batch_size=8, min_cell_size=5, task="p.m:T")
    rows = {"a": {"positives": 20, "negatives": 20}, "b": {"positives": 1, "negatives": 39}}
    full = {"samples": 40, "f1.a": 0.5, "f1.b": 1.0, "f@0.5.b": 1.0, "per_class": rows}
    shared = shareable_figures(full, ("a", "b"), plan, "f1.a")
    assert shared["f1.a"] == 0.5 and shared["f1.b"] is None and shared["f@0.5.b"] is None
    dp = dataclasses.replace(plan, dp_noise_multiplier=1.0)
    assert shareable_figures(full, ("a", "b"), dp, "per_class") == {"samples": 40}
    assert shareable_figures(full, ("a", "b"), dp, "f1.b") == {"samples": 40, "f1.b": 1.0}
