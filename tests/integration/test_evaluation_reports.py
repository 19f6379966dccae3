"""Signed evaluation reports: a site writes one on held-out data, the hub verifies and tables it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flsilo.cli.app import run
from flsilo.signing import evalreport as er
from flsilo.signing.keys import generate_key
from tests.conftest import (
    Federation,
    digits_npz,
    fingerprint,
    needs_ssh_keygen,
    ssh_keygen,
    tree_digest,
)

PACKAGE = "fed-r0000.safetensors"


HELD_OUT = 60  # records: about 6 a class, and the figures' values are not what is checked


def _held_out(tmp_path: Path) -> Path:
    return digits_npz(tmp_path / "held-out.npz", np.arange(1500, 1500 + HELD_OUT))


@pytest.fixture(scope="module")
def site_a_report(
    federation_template: Federation, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    """The files ``evaluate --report`` writes into site-a's outbox on held-out data, made
    once for this file from a copy of the session's federation (each test's federation is
    another copy of it: the same keys and package)."""
    fed = federation_template.copy(tmp_path_factory.mktemp("report") / "fed")
    ws = fed.sites["site-a"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = run(["evaluate", str(ws / "packages" / PACKAGE), "--site", str(ws), "--data",
                    str(_held_out(fed.root)), "--report", "--json"])  # fmt: skip
    assert code == 0
    path = Path(json.loads(out.getvalue())["report"])
    assert path == ws / "outbox" / "r0000-site-a.eval.json"
    return {p.name: p.read_bytes() for p in sorted((ws / "outbox").glob(f"{path.name}*"))}


@pytest.fixture
def report(federation: Federation, site_a_report: dict[str, bytes]) -> Path:
    """site-a's signed report on held-out data, in this test's federation's outbox."""
    outbox = federation.sites["site-a"] / "outbox"
    for name, data in site_a_report.items():
        (outbox / name).write_bytes(data)
    return outbox / "r0000-site-a.eval.json"


def test_a_site_writes_a_signed_report_the_hub_tables(
    federation: Federation, cli, report: Path, tmp_path: Path
) -> None:
    path = report
    report = json.loads(path.read_bytes())
    assert report["samples"] == HELD_OUT and report["site"] == "site-a"
    figures = report["metrics"]
    assert {"sensitivity", "specificity", "auroc", "ap", "ci95"} <= set(figures["per_class"]["0"])
    assert "x" not in report and "scores" not in json.dumps(report)  # figures only
    result = cli("hub", "evaluations", federation.hub, "--inbox", path.parent, "--json")
    assert result.code == 0, result.err
    (row,) = json.loads(result.out)["reports"]
    assert row["site"] == "site-a" and row["round"] == 0 and row["archived"] is False
    png = tmp_path / "evaluations.png"
    text = cli("hub", "evaluations", federation.hub, "--inbox", path.parent, "--png", png)
    assert text.code == 0 and "r0000" in text.out and "site-a" in text.out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "%" in text.out and max(len(line) for line in text.out.splitlines()) <= 80


def test_reports_copied_into_the_hubs_inbox_are_shown_without_inbox(
    federation: Federation, cli, report: Path
) -> None:
    """The guide has carried files copied into HUB/inbox; reports there wait for the next
    aggregate, and ``hub evaluations HUB`` shows them (marked) without naming the folder."""
    before = cli("hub", "evaluations", federation.hub)
    assert before.code == 0 and "no verified evaluation report yet" in before.err
    inbox = federation.hub / "inbox"
    for f in (report, er.sig_of(report)):
        shutil.copy2(f, inbox / f.name)
    kept = tree_digest(inbox)
    shown = cli("hub", "evaluations", federation.hub)
    assert shown.code == 0 and "r0000" in shown.out and "site-a" in shown.out
    assert f"* in {inbox}, not yet archived: the next aggregate archives" in " ".join(
        shown.err.split()
    )
    (row,) = json.loads(cli("hub", "evaluations", federation.hub, "--json").out)["reports"]
    assert row["file"] == str(inbox / report.name) and row["archived"] is False
    assert tree_digest(inbox) == kept  # read, never moved


def test_one_changed_byte_and_the_report_is_refused(
    federation: Federation, cli, report: Path
) -> None:
    path = report
    data = bytearray(path.read_bytes())
    data[data.index(b'"samples":60') + 10] = ord("9")
    path.write_bytes(bytes(data))
    result = cli("hub", "evaluations", federation.hub, "--inbox", path.parent, "--json")
    assert result.code == 3
    (refused,) = json.loads(result.out)["refused"]
    assert refused["code"] == "bad-signature"


def test_a_report_from_an_unenrolled_key_is_refused(
    federation: Federation, cli, report: Path
) -> None:
    path = report
    stranger = generate_key("ed25519")
    er.sig_of(path).write_bytes(er.sign(path.read_bytes(), stranger))
    result = cli("hub", "evaluations", federation.hub, "--inbox", path.parent)
    assert result.code == 3 and "unknown-signer" in result.out + result.err


def test_a_report_on_the_training_data_is_refused(federation: Federation, cli) -> None:
    ws = federation.sites["site-a"]
    before = tree_digest(ws)
    copy = ws.parent / "copy-of-training.npz"
    shutil.copy(federation.data["site-a"], copy)
    for data in (federation.data["site-a"], copy):  # the same file, or the same bytes
        result = cli(
            "evaluate", ws / "packages" / PACKAGE, "--site", ws, "--data", data, "--report"
        )
        assert result.code == 2 and "eval-on-training-data" in result.err
    assert tree_digest(ws) == before


def test_aggregate_archives_and_logs_reports_never_as_bundles(
    federation: Federation, cli, report: Path
) -> None:
    path = report
    federation.carry()
    inbox = federation.hub / "inbox"
    shutil.copy(path, inbox / path.name)
    shutil.copy(er.sig_of(path), inbox / er.sig_of(path).name)
    result = cli("aggregate", federation.hub, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["report"]["evaluations"] == [path.name]
    assert not list((federation.hub / "quarantine").rglob("*.eval.json"))
    assert (inbox / path.name).exists()  # hub inputs are never deleted or modified
    archived = federation.hub / "rounds" / "0000" / path.name
    assert archived.read_bytes() == path.read_bytes()
    assert path.name in (archived.parent / "SHA256SUMS").read_text()
    events = [
        json.loads(line) for line in (federation.hub / "events.jsonl").read_text().splitlines()
    ]
    (logged,) = [e for e in events if e["event"] == "evaluation"]
    assert logged["site"] == "site-a" and logged["report"] == path.name
    shown = json.loads(cli("hub", "evaluations", federation.hub, "--json").out)
    assert [r["archived"] for r in shown["reports"]] == [True]
    hub_fp = fingerprint(federation.keys / "hub.pub")
    audit = cli("audit", federation.hub, "--hub-fingerprint", hub_fp)
    assert audit.code == 0, audit.out + audit.err
    # the same report carried again is not archived or logged twice
    assert cli("aggregate", federation.hub, "--json").code in (0, 1)
    again = (federation.hub / "events.jsonl").read_text().count('"event":"evaluation"')
    assert again == 1


@needs_ssh_keygen
def test_stock_ssh_keygen_checks_a_report(federation: Federation, report: Path) -> None:
    path = report
    sig = er.sig_of(path)
    checked = ssh_keygen(
        "-Y", "check-novalidate", "-n", "flsilo-eval", "-s", str(sig), stdin=path.read_bytes()
    )
    assert checked.returncode == 0, checked.stderr
    found = ssh_keygen(
        "-Y", "find-principals", "-s", str(sig), "-f", str(federation.hub / "allowed_signers")
    )
    assert found.stdout.decode().strip() == "site-a"


def _resign(path: Path, federation: Federation, change: dict) -> None:
    from flsilo.signing.keys import load_private_key

    report = json.loads(path.read_bytes())
    report.update(change)
    data = er.encode(report)
    path.write_bytes(data)
    key = load_private_key(federation.keys / "site-a", lambda _p: b"")
    er.sig_of(path).write_bytes(er.sign(data, key))


def test_a_report_about_a_package_the_hub_never_issued(
    federation: Federation, cli, report: Path
) -> None:
    path = report
    _resign(path, federation, {"package_sha256": "ab" * 32})
    result = cli("hub", "evaluations", federation.hub, "--inbox", path.parent, "--json")
    assert result.code == 3
    assert json.loads(result.out)["refused"][0]["code"] == "eval-foreign-package"


def test_a_renamed_or_reformatted_report_is_refused(
    federation: Federation, cli, report: Path
) -> None:
    path = report
    renamed = path.with_name("r0000-site-b.eval.json")
    path.rename(renamed)
    er.sig_of(path).rename(er.sig_of(renamed))
    result = cli("hub", "evaluations", federation.hub, "--inbox", path.parent, "--json")
    assert result.code == 3
    assert json.loads(result.out)["refused"][0]["code"] == "eval-report-malformed"
    # valid JSON, validly signed, but not the canonical text: refused as well
    pretty = json.dumps(json.loads(renamed.read_bytes()), indent=1).encode()
    key_path = federation.keys / "site-a"
    from flsilo.signing.keys import load_private_key

    path.write_bytes(pretty)
    er.sig_of(path).write_bytes(er.sign(pretty, load_private_key(key_path, lambda _p: b"")))
    renamed.unlink()
    er.sig_of(renamed).unlink()
    again = cli("hub", "evaluations", federation.hub, "--inbox", path.parent, "--json")
    assert json.loads(again.out)["refused"][0]["reason"].endswith("(not in canonical form)")


PLUGIN = "tests.plugin_metric_task:TASK"


def _as_plugin_report(path: Path, federation: Federation, site: str, change: dict) -> Path:
    """``path``'s report as a plug-in task's, for ``site``, signed with its key."""
    from flsilo.signing.keys import load_private_key

    report = json.loads(path.read_bytes()) | {"task": PLUGIN, "site": site} | change
    out = path.with_name(er.report_name(report["round"], site))
    data = er.encode(report)
    out.write_bytes(data)
    key = load_private_key(federation.keys / site, lambda _p: b"")
    er.sig_of(out).write_bytes(er.sign(data, key))
    return out


def test_a_plugin_tasks_reports_are_shown_by_their_own_figure(
    federation: Federation, cli, report: Path
) -> None:
    """The table and its JSON show a plug-in task's reports by the figure they
    lead with, never as accuracy: the one a report names (``primary_metric``, signed with
    it), or, in a report written before reports named it, its first figure by key; read
    from the reports alone (the plug-in is not imported by the hub: see the slow test for
    one made by a real plug-in federation)."""
    figures = json.loads(report.read_bytes())["metrics"]
    named = {"primary_metric": "macro_f1", "metrics": figures | {"macro_f1": 0.25}}
    _as_plugin_report(report, federation, "site-a", named)
    earlier = {"samples": HELD_OUT, "macro_f1": 0.5, "top1": 0.75}  # no accuracy, names none
    _as_plugin_report(report, federation, "site-b", {"metrics": earlier})
    shown = cli("hub", "evaluations", federation.hub, "--inbox", report.parent, "--json")
    assert shown.code == 0, shown.out
    rows = {r["site"]: r for r in json.loads(shown.out)["reports"]}
    assert {s: r["metric"] for s, r in rows.items()} == {"site-a": "macro_f1", "site-b": "macro_f1"}
    text = cli("hub", "evaluations", federation.hub, "--inbox", report.parent)
    assert text.code == 0 and "macro_f1 per package and site" in text.out
    assert "accuracy" not in text.out
    assert "0.250 *" in text.out and "0.500 *" in text.out and "%" not in text.out
    # a report that names another figure: each cell names its own
    other = {"primary_metric": "top1", "metrics": {"samples": 9, "top1": 0.75}}
    _as_plugin_report(report, federation, "site-b", other)
    mixed = cli("hub", "evaluations", federation.hub, "--inbox", report.parent)
    assert "primary figure per package and site" in mixed.out
    assert "macro_f1 0.250 *" in mixed.out and "top1 0.750 *" in mixed.out


@pytest.mark.parametrize("named", ["", "two words", 3, "x" * 65])
def test_a_report_naming_no_figure_key_is_refused(
    federation: Federation, cli, report: Path, named: object
) -> None:
    _resign(report, federation, {"task": PLUGIN, "primary_metric": named})
    result = cli("hub", "evaluations", federation.hub, "--inbox", report.parent, "--json")
    assert result.code == 3
    (refused,) = json.loads(result.out)["refused"]
    assert refused["code"] == "eval-report-malformed" and "primary_metric" in refused["reason"]


@pytest.mark.slow
def test_a_plugin_federation_reports_and_claims_by_its_own_figure(tmp_path: Path, cli) -> None:
    """A real plug-in task federation whose task leads with macro F1: the site's signed report
    names and holds that figure, the hub's table and JSON show it by its key, the archived
    report's log event keeps it, and the hub's claim (aggregate --eval) names it, which
    inspect leads with; audit checks the lot."""
    from tests.conftest import build_federation, hub_root

    fed = build_federation(tmp_path / "fed", schedule="one-shot", extra=("--task", PLUGIN))
    site = fed.sites["site-a"]
    done = cli("evaluate", site / "packages" / PACKAGE, "--site", site, "--data",
               _held_out(tmp_path), "--report", "--json")  # fmt: skip
    assert done.code == 0, done.err
    path = Path(json.loads(done.out)["report"])
    report = json.loads(path.read_bytes())
    assert report["task"] == PLUGIN and report["primary_metric"] == "macro_f1"
    f1 = report["metrics"]["macro_f1"]
    assert isinstance(f1, float) and report["metrics"]["top1"] == report["metrics"]["accuracy"]
    shown = cli("hub", "evaluations", fed.hub, "--inbox", path.parent, "--json")
    assert shown.code == 0 and json.loads(shown.out)["reports"][0]["metric"] == "macro_f1"
    text = cli("hub", "evaluations", fed.hub, "--inbox", path.parent)
    assert "macro_f1 per package and site" in " ".join(text.out.split())  # a narrow table wraps
    assert f"{f1:.3f} *" in text.out and "accuracy" not in text.out
    fed.carry()
    for p in (path, er.sig_of(path)):
        shutil.copy(p, fed.hub / "inbox" / p.name)
    test_set = digits_npz(tmp_path / "hub-test.npz", np.arange(1600, 1700))
    agg = cli("aggregate", fed.hub, "--eval", test_set, "--json")
    assert agg.code == 0, agg.err
    claim = json.loads(agg.out)["report"]["hub_evaluation"]
    assert claim["primary_metric"] == "macro_f1" and "macro_f1" in claim["figures"]
    events = [json.loads(x) for x in (fed.hub / "events.jsonl").read_text().splitlines()]
    (logged,) = [e for e in events if e["event"] == "evaluation"]
    assert logged["macro_f1"] == f1 and "accuracy" not in logged
    package = Path(json.loads(agg.out)["report"]["package"])
    shown = " ".join(cli("inspect", package).out.split())
    assert f"hub claim macro_f1 {claim['figures']['macro_f1']:.3f}, balanced accuracy" in shown
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay")
    assert audit.code == 0, audit.out


def test_a_plugin_packages_report_names_its_figure_in_a_dp_federation_too(
    federation: Federation, tmp_path: Path
) -> None:
    """The report's fields for a plug-in task's package (site_kit.evalreport.build_report,
    which the slow test reaches through a real plug-in federation): it names the task's
    primary figure and holds it beside the whole-set figures, in a DP federation too, and
    lets no per-class row out there."""
    from dataclasses import replace

    from flsilo.format.artifact import scan_file, verify_file
    from flsilo.plans.plan import TaskSpec
    from flsilo.signing.keys import load_public_key
    from flsilo.signing.trust import SingleKey
    from site_kit.evalreport import build_report
    from site_kit.workspace import SiteWorkspace
    from tests.integration.test_review_gaps import _resign_package

    site = federation.sites["site-a"]
    m = scan_file(site / "packages" / PACKAGE).manifest
    assert m.package is not None and m.package.plan is not None
    plan = replace(m.package.plan, task=PLUGIN, dp_noise_multiplier=1.0, dp_budget=50.0)
    package = _resign_package(site / "packages" / PACKAGE, tmp_path / PACKAGE,
                              federation.keys / "hub",
                              model=replace(m.model, task=TaskSpec(name=PLUGIN)),
                              package=replace(m.package, plan=plan))  # fmt: skip
    hub = SingleKey(load_public_key(federation.keys / "hub.pub"), "hub.pub")
    full = {"samples": 9, "accuracy": 0.5, "macro_f1": 0.25, "top1": 0.5, "per_class": {}}
    report = build_report(SiteWorkspace.open(site), verify_file(package, hub), full,
                          skipped=0, primary="macro_f1")  # fmt: skip
    assert report["task"] == PLUGIN and report["primary_metric"] == "macro_f1"
    assert report["dp"] is True
    assert report["metrics"] == {"samples": 9, "accuracy": 0.5, "macro_f1": 0.25}
    assert er.primary_figure(er.parse(er.encode(report), package)) == "macro_f1"
