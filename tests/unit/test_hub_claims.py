"""The hub's claims (flsilo.signing.claims, hub_kit.hubeval): built from the evaluation figures,
carried in a package manifest only when made (older packages' bytes unchanged), and the
audit's agreement check between the package's copy and the log's."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from flsilo.format import manifest as mf
from flsilo.plans.plan import Schedule
from flsilo.scoring.metrics import classification_report
from flsilo.signing.claims import HubEvaluation, claim_from_report
from hub_kit.hubeval import claim_field, claim_problem

DATA = "ab" * 32


def _claim() -> HubEvaluation:
    truth = np.array([0, 0, 1, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.5, 0.5]])
    figures = classification_report(truth, proba, ("a", "b"), seed=3, draws=50)
    return claim_from_report(
        figures,
        task="classify",
        values={"accuracy": 5 / 6},
        loss=0.5,
        test_set_sha256="cd" * 32,
        test_set_records=6,
        data_format="npz",
        data_sha256=DATA,
        skipped=0,
        seed=3,
        draws=50,
        software={"flsilo": "t"},
    )


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
