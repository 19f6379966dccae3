"""aggregate --eval DATA: the hub scores the new package on its own test set and records the
figures as claims signed by the hub, in the package's manifest and the log's aggregate
event; inspect, hub history and the model card show them as the hub's; audit --replay checks
that both copies agree without recomputing them; bad DATA fails before anything changes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from flsilo.format.artifact import scan_file
from flsilo.signing.claims import HubEvaluation
from sim_kit.datasets import load_digits
from tests.conftest import Federation, digits_npz, hub_root, tree_digest

TEST_RECORDS = 100  # about 10 a class: where the figures' values do not matter


def _test_set(root: Path, records: int = TEST_RECORDS) -> Path:
    order = np.random.default_rng(0).permutation(1797)
    return digits_npz(root / "hub-test.npz", order[500 : 500 + records])  # no site's records


def _aggregate_event(hub: Path) -> dict:
    lines = [json.loads(x) for x in (hub / "events.jsonl").read_text().splitlines()]
    return [e for e in lines if e["event"] == "aggregate"][-1]


def test_hub_claims_are_signed_shown_and_audited(federation: Federation, cli) -> None:
    federation.carry()
    data = _test_set(federation.root, 200)  # enough that the accuracy is clear of chance
    done = cli("aggregate", federation.hub, "--eval", data, "--json")
    assert done.code == 0, done.err
    report = json.loads(done.out)["report"]
    claim = report["hub_evaluation"]
    assert claim["test_set_records"] == claim["samples"] == 200
    assert claim["data_format"] == "npz" and claim["task"] == "classify"
    assert 0.5 < claim["figures"]["accuracy"] <= 1.0
    assert sum(map(sum, claim["confusion"])) == 200
    assert set(claim["per_class"]) == {str(d) for d in range(10)}
    # figures only: the test set is named by its index digest and size, never its records
    # a built-in task's primary figure is known, and only a detector's claim counts boxes
    left_out = {"primary_metric", "objects"}
    assert set(claim) == {f.name for f in dataclasses.fields(HubEvaluation)} - left_out
    assert len(claim["test_set_sha256"]) == 64 and "hub-test" not in json.dumps(claim)
    package = Path(report["package"])
    manifest = scan_file(package).manifest
    assert manifest.package is not None and manifest.package.hub_evaluation is not None
    event = _aggregate_event(federation.hub)
    assert event["hub_evaluation"] == claim
    assert claim["data_sha256"] == event["data_sha256"] == scan_file(package).data_sha256

    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay", "--json")
    assert audit.code == 0, audit.out
    checks = {c["name"]: c for c in json.loads(audit.out)["audit"]["checks"]}
    assert checks["hub claim r0001"]["ok"]
    assert "not recomputed" in checks["hub claim r0001"]["detail"]

    shown = cli("inspect", package)
    assert "hub claim" in shown.out and "the hub's figures" in shown.out
    history = cli("hub", "history", federation.hub, "--json")
    assert json.loads(history.out)["rounds"][0]["hub_claim"] == claim
    assert "hub claim" in cli("hub", "history", federation.hub).out
    png = federation.root / "history.png"
    assert cli("hub", "history", federation.hub, "--png", png).code == 0
    assert png.read_bytes().startswith(b"\x89PNG")

    card_dir = federation.root / "card"
    card = cli("report", package, "--hub", federation.hub, *hub_root(federation.hub),
               "--out", card_dir)  # fmt: skip
    assert card.code == 0, card.err
    text = (card_dir / "card.md").read_text()
    assert "## Hub claims (the hub's own test set)" in text
    assert f"{100 * claim['figures']['accuracy']:.1f}%" in text


def test_without_eval_no_claim_and_no_audit_line(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    assert "hub_evaluation" not in _aggregate_event(federation.hub)
    package = federation.hub / "packages" / "fed-r0001.safetensors"
    assert b"hub_evaluation" not in package.read_bytes()[:65536]
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert not any(
        c["name"].startswith("hub claim") for c in json.loads(audit.out)["audit"]["checks"]
    )


def test_bad_eval_data_changes_nothing(federation: Federation, cli) -> None:
    federation.carry()
    x, y = load_digits()
    outside = federation.root / "outside.npz"
    np.savez(outside, x=x[:20], y=np.full(20, 12))  # label 12 is not one of the classes
    text = federation.root / "notes.txt"
    text.write_text("not a data set\n")
    before = tree_digest(federation.hub)
    for data, code in ((federation.root / "missing", 4), (outside, 4), (text, 2)):
        for extra in ((), ("--dry-run",)):
            failed = cli("aggregate", federation.hub, "--eval", data, *extra)
            assert failed.code == code, (data, failed.err)
            lines = [ln for ln in failed.err.splitlines() if ln.strip()]
            assert len(lines) == 1 and "--eval" in lines[0] and "hint" in lines[0], lines
            assert tree_digest(federation.hub) == before


def test_claim_with_a_server_optimizer_names_the_replayed_tensors(
    federation: Federation, cli
) -> None:
    """The scratch pass that is scored and the package pass compute the same tensors even
    with server state (three passes in all); audit --replay recomputes the package."""
    federation.carry()
    data = _test_set(federation.root)
    done = cli("aggregate", federation.hub, "--eval", data, "--server-optimizer", "fedavgm",
               "--json")  # fmt: skip
    assert done.code == 0, done.err
    report = json.loads(done.out)["report"]
    assert report["hub_evaluation"]["data_sha256"] == scan_file(Path(report["package"])).data_sha256
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay")
    assert audit.code == 0, audit.out


def _claim_of(tmp_path: Path, cli, *plan: str) -> dict:
    from tests.conftest import build_federation

    fed = build_federation(tmp_path / "fed", schedule="one-shot", extra=plan)
    fed.carry()
    done = cli("aggregate", fed.hub, "--eval", _test_set(tmp_path), "--json")
    assert done.code == 0, done.err
    return json.loads(done.out)["report"]["hub_evaluation"]


def test_hub_claims_withhold_small_cells_as_site_reports_do(tmp_path: Path, cli) -> None:
    """The claim goes to every site in the package: a count below the plan's minimum cell size
    is withheld (the hub test set has about 10 records per class, below 30), as in a site's
    signed report, and so is every rate built on such a small class."""
    claim = _claim_of(tmp_path, cli, "--min-cell-size", "30")
    cells = [c for row in claim["confusion"] for c in row]
    assert len(cells) == 100 and all(c is None or c == 0 for c in cells) and None in cells
    assert all(v is None for row in claim["per_class"].values() for v in row.values())
    assert claim["figures"]["accuracy"] is not None and claim["samples"] == TEST_RECORDS


def test_hub_claims_in_a_dp_federation_carry_aggregate_figures_only(tmp_path: Path, cli) -> None:
    claim = _claim_of(tmp_path, cli, "--dp-noise-multiplier", "1", "--dp-budget", "50",
                      "--dp-clip", "1")  # fmt: skip
    assert claim["per_class"] == {} and claim["ci95"] == {} and claim["confusion"] == []
    assert set(claim["figures"]) == {"accuracy", "balanced_accuracy", "ece", "loss"}


def test_a_test_set_changed_after_its_check_is_refused(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim names the test set by the digest of the records checked before the round;
    records changed before they are scored would be misnamed, so the round stops instead."""
    from sim_kit.hubeval import HubTestSet

    federation.carry()
    data = _test_set(federation.root)
    checked = HubTestSet.check

    def check_then_change(self: HubTestSet, package: object) -> None:
        checked(self, package)  # type: ignore[arg-type]
        order = np.random.default_rng(1).permutation(1797)
        digits_npz(data, order[500 : 500 + TEST_RECORDS])  # same size and place, other records

    monkeypatch.setattr(HubTestSet, "check", check_then_change)
    before = tree_digest(federation.hub)
    failed = cli("aggregate", federation.hub, "--eval", data)
    assert failed.code == 1, failed.err
    lines = [ln for ln in failed.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error[test-set-changed]" in lines[0] and "hint" in lines[0], lines
    assert tree_digest(federation.hub) == before


def test_eval_writes_the_package_once_with_the_recorded_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round is computed once and the package written once, claim included; its bytes,
    its signature and the log are those the two-pass code wrote (recorded from it, from the
    golden round's fixture with its creation time pinned)."""
    import hub_kit.packaging
    from tests.integration.test_golden_round import _aggregate, _pin

    _pin(monkeypatch)
    data = digits_npz(tmp_path / "hub-test.npz", np.arange(1000, 1200))
    written: list[str] = []
    real = hub_kit.packaging.atomic_writer

    def counted(path: Path, *args: object, **kwargs: object) -> object:
        written.append(Path(path).name)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hub_kit.packaging, "atomic_writer", counted)
    code, tree = _aggregate(tmp_path, ["--eval", str(data)])
    assert code == 0
    recorded = {
        "packages/fed-r0001.safetensors": "2bf0f149d5f4545b30b3f062befe9df4bd2c6f5193e9baedd71f865a3de01642",
        "packages/fed-r0001.safetensors.sig": "36f0c6632d2d615d4ae4d4d07d4091a6542c6282300ec47eaac4782f3e880ded",
        "events.jsonl": "3f987d087c04919f91c7b53776557d20fd4fe6687627db86f40c41211a969e0a",
        "events.jsonl.sig": "18e35bdfc4077d0cac73c0dcb87b07cedc9e294ca9b2754c18e6a53b7bce4971",
    }
    assert {k: tree[k] for k in recorded} == recorded
    assert written.count("fed-r0001.safetensors") == 1
    assert written.count("fed-r0001.safetensors.sig") == 1


def test_a_bad_record_in_the_test_set_gets_a_hint_the_hub_can_follow(
    federation: Federation, cli
) -> None:
    """The data layer's hint offers --skip-bad, which aggregate does not have: the hub is
    told to fix or remove the record instead, in one line, and nothing changes."""
    from sim_kit.datasets import load_digits

    x, y = load_digits()
    y = y[:40].copy()
    y[3] = 99  # a label outside the federation's classes
    data = federation.root / "bad-test.npz"
    np.savez(data, x=x[:40], y=y)
    before = tree_digest(federation.hub)
    failed = cli("aggregate", federation.hub, "--eval", data)
    lines = [ln for ln in failed.err.splitlines() if ln.strip()]
    assert failed.code == 4 and len(lines) == 1, failed.err
    assert "error[bad-record]" in lines[0] and "the hub's test set (--eval)" in lines[0]
    assert "pass --skip-bad" not in lines[0]
    assert "fix or remove the bad records in the hub's test set" in lines[0]
    assert tree_digest(federation.hub) == before
