"""hub init --require-evaluations M: the final package is final only after M distinct sites'
signed evaluation reports on it verify. The count shows in hub status, hub evaluations and
the model card; reports on the final package are taken in by hub evaluations --archive."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flsilo.cli.app import run
from tests.conftest import Federation, build_federation, digits_npz, hub_root, tree_digest

FINAL = "fed-r0001.safetensors"


def _site_report(fed: Federation, cli, site: str, data: Path) -> Path:
    """The site receives the final package and writes its signed report on held-out data."""
    ws = fed.sites[site]
    for name in (FINAL, f"{FINAL}.sig"):
        shutil.copy(fed.hub / "packages" / name, ws / "packages" / name)
    done = cli("evaluate", ws / "packages" / FINAL, "--site", ws, "--data", data, "--report",
               "--json")  # fmt: skip
    assert done.code == 0, done.err
    return Path(json.loads(done.out)["report"])


def _status(fed: Federation, cli) -> dict:
    done = cli("hub", "status", fed.hub, "--json")
    assert done.code == 0, done.err
    return json.loads(done.out)["finality"]


def test_final_only_after_m_sites_reports_verify(tmp_path: Path, cli) -> None:
    fed = build_federation(
        tmp_path / "fed", schedule="one-shot", extra=("--require-evaluations", "2")
    )
    init = json.loads((fed.hub / "events.jsonl").read_text().splitlines()[0])
    assert init["require_evaluations"] == 2  # in the signed log, not only federation.toml
    fed.carry()
    made = cli("aggregate", fed.hub)
    assert made.code == 0, made.err
    # the schedule ended, but the package is not final for use yet: aggregate says so
    assert "NOT final until 2 sites' evaluation reports on it verify" in made.err
    assert "final — the federation is complete" not in made.err
    standing = _status(fed, cli)
    assert standing == {
        "required": 2, "round": 1, "package": FINAL, "sites": [], "pending": [],
        "final": False, "text": standing["text"],
    }  # fmt: skip
    assert "not final yet: 0 of 2" in standing["text"]
    assert "complete, not final" in cli("hub", "status", fed.hub).out
    # a lone file cannot show the hub's count: inspect and verify say so, never 'final: yes'
    final = fed.hub / "packages" / FINAL
    for shown in (
        cli("inspect", final).out,
        cli("verify", final, "--signers", fed.hub / "allowed_signers").out,
    ):
        flat = " ".join(shown.replace("│", " ").split())
        assert "final for use only once any evaluation reports the hub requires verify" in flat
        assert "(flsilo hub status HUB)" in flat and "yes" not in flat

    card = tmp_path / "card"
    made = cli("report", fed.hub / "packages" / FINAL, "--hub", fed.hub, *hub_root(fed.hub),
               "--out", card)  # fmt: skip
    assert made.code == 0, made.err
    text = (card / "card.md").read_text()
    assert "NOT final: 0 of the 2 required" in text and "(final)" not in text

    held_out = digits_npz(tmp_path / "held-out.npz", np.arange(1500, 1560))
    a = _site_report(fed, cli, "site-a", held_out)
    # the site's own status knows the federation's rule (its federation.toml) and says what
    # the package still needs, with the command that sends the site's part
    site = cli("site", "status", fed.sites["site-a"])
    assert site.code == 0, site.err
    flat = " ".join(site.out.split())
    assert f"{FINAL}: verified (the schedule's last: final for use once 2 sites' signed" in flat
    assert "--report" in flat and " final\n" not in site.out
    assert (
        json.loads(cli("site", "status", fed.sites["site-a"], "--json").out)["require_evaluations"]
        == 2
    )
    shown = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--json")
    assert json.loads(shown.out)["finality"]["pending"] == ["site-a"]  # seen, not yet counted
    # no aggregate follows the last round: the footnote names --archive instead
    footnote = " ".join(cli("hub", "evaluations", fed.hub, "--inbox", a.parent).err.split())
    assert f"not yet archived: the same command with --inbox {a.parent} --archive" in footnote
    taken = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive", "--json")
    assert taken.code == 0, taken.err
    doc = json.loads(taken.out)
    assert doc["archived_now"] == [a.name]
    assert doc["finality"]["sites"] == ["site-a"] and not doc["finality"]["final"]
    assert (fed.hub / "rounds" / "0000" / a.name).read_bytes() == a.read_bytes()
    again = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive", "--json")
    assert json.loads(again.out)["archived_now"] == []  # logged once

    b = _site_report(fed, cli, "site-b", held_out)
    assert cli("hub", "evaluations", fed.hub, "--inbox", b.parent, "--archive").code == 0
    standing = _status(fed, cli)
    assert standing["final"] and standing["sites"] == ["site-a", "site-b"]
    assert "complete" in cli("hub", "status", fed.hub).out
    events = [json.loads(x) for x in (fed.hub / "events.jsonl").read_text().splitlines()]
    logged = [e for e in events if e["event"] == "evaluation"]
    assert [(e["site"], e["round"], e["archive_round"]) for e in logged] == [
        ("site-a", 1, 0),
        ("site-b", 1, 0),
    ]
    audit = cli("audit", fed.hub, *hub_root(fed.hub))
    assert audit.code == 0, audit.out  # the rewritten SHA256SUMS lists the reports
    shutil.rmtree(card)
    assert cli("report", fed.hub / "packages" / FINAL, "--hub", fed.hub, *hub_root(fed.hub),
               "--out", card).code == 0  # fmt: skip
    assert "1 (final)" in (card / "card.md").read_text()


def test_archive_before_the_last_round_changes_nothing(federation: Federation, cli) -> None:
    before = tree_digest(federation.hub)
    refused = cli("hub", "evaluations", federation.hub, "--inbox", federation.hub / "inbox",
                  "--archive")  # fmt: skip
    assert refused.code == 2
    assert "archived by the next aggregate" in refused.err
    assert tree_digest(federation.hub) == before
    assert cli("hub", "evaluations", federation.hub, "--archive").code == 2  # needs --inbox
    standing = _status(federation, cli)
    assert standing["required"] == 0 and standing["package"] is None


def test_require_evaluations_must_not_be_negative(tmp_path: Path, cli) -> None:
    from tests.conftest import make_key

    key = make_key(tmp_path / "hub")
    bad = cli("hub", "init", tmp_path / "h", "--federation", "f", "--model", "logreg",
              "--classes", "a,b", "--input-shape", "4", "--key", key,
              "--require-evaluations", "-1")  # fmt: skip
    assert bad.code == 2 and "require_evaluations" in bad.err
    assert not (tmp_path / "h").exists()


@pytest.fixture(scope="module")
def _reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Federation, Path]:
    """A one-shot federation that requires 1 report, aggregated, and site-a's signed report
    on its final package (held-out.npz beside the federation): built once for the file."""
    root = tmp_path_factory.mktemp("reported")
    fed = build_federation(root / "fed", schedule="one-shot", extra=("--require-evaluations", "1"))
    fed.carry()
    assert run(["aggregate", str(fed.hub)]) == 0
    held_out = digits_npz(root / "held-out.npz", np.arange(1500, 1560))
    ws = fed.sites["site-a"]
    for name in (FINAL, f"{FINAL}.sig"):
        shutil.copy(fed.hub / "packages" / name, ws / "packages" / name)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert run(["evaluate", str(ws / "packages" / FINAL), "--site", str(ws), "--data",
                    str(held_out), "--report", "--json"]) == 0  # fmt: skip
    return fed, Path(json.loads(out.getvalue())["report"])


@pytest.fixture
def one_shot_with_report(_reported: tuple[Federation, Path], tmp_path: Path):
    """A private copy of :func:`_reported` in ``tmp_path`` (``fed``, ``held-out.npz``)."""

    def copy() -> tuple[Federation, Path]:
        template, report = _reported
        fed = template.copy(tmp_path / "fed")
        shutil.copy(template.root.parent / "held-out.npz", tmp_path / "held-out.npz")
        return fed, fed.root / report.relative_to(template.root)

    return copy


def test_an_interrupted_archive_counts_nothing_and_resumes(
    cli, one_shot_with_report, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills as SHA256SUMS is rewritten: the report is in the folder but not in the
    log, so it does not count; the next --archive takes the same report in and logs it."""
    import errno

    import flsilo.fs.atomic

    fed, a = one_shot_with_report()
    real = flsilo.fs.atomic.disk_point

    def full_at_sums(path: Path) -> None:
        if path.name == "SHA256SUMS":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path)

    monkeypatch.setattr(flsilo.fs.atomic, "disk_point", full_at_sums)
    failed = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive")
    assert failed.code == 1 and "error[disk-full]" in failed.err
    monkeypatch.undo()
    assert (fed.hub / "rounds" / "0000" / a.name).exists()  # written, never logged
    standing = _status(fed, cli)
    assert standing["sites"] == [] and not standing["final"]
    assert "0 of 1 site's evaluation reports on it verify" in standing["text"]
    again = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["archived_now"] == [a.name]
    assert _status(fed, cli)["final"]
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0


def test_archive_keeps_the_rounds_sums_and_adds_the_reports(
    tmp_path: Path, cli, one_shot_with_report
) -> None:
    """SHA256SUMS gains the reports' lines; a file that is not the round's is not blessed."""
    fed, a = one_shot_with_report()
    untouched = tree_digest(fed.hub)
    typo = cli("hub", "evaluations", fed.hub, "--inbox", tmp_path / "no-such", "--archive")
    assert typo.code == 2 and "error[no-inbox]" in typo.err and len(typo.err.splitlines()) == 1
    assert tree_digest(fed.hub) == untouched  # a mistyped stick archives nothing, and says so
    folder = fed.hub / "rounds" / "0000"
    before = (folder / "SHA256SUMS").read_text()
    (folder / "stray.txt").write_text("not the round's\n")
    assert cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive").code == 0
    after = (folder / "SHA256SUMS").read_text()
    assert set(before.splitlines()) < set(after.splitlines())
    added = set(after.splitlines()) - set(before.splitlines())
    assert sorted(line.split("  ")[1] for line in added) == [a.name, f"{a.name}.sig"]
    audit = cli("audit", fed.hub, *hub_root(fed.hub))
    assert audit.code == 3 and "stray.txt" in audit.out


def test_audit_checks_archived_reports_against_the_log(
    tmp_path: Path, cli, one_shot_with_report
) -> None:
    """A report swapped in the round folder (another one the site signed, SHA256SUMS made to
    match) or one the log never recorded fails audit, each named."""
    from flsilo.signing.checksums import parse_sums, render_sums

    fed, a = one_shot_with_report()
    assert cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive").code == 0
    folder = fed.hub / "rounds" / "0000"
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0
    other = digits_npz(tmp_path / "other.npz", np.arange(1700, 1760))
    first = tmp_path / "first"  # the archived one, moved out of the outbox
    first.mkdir()
    for path in (a, a.with_name(a.name + ".sig")):
        path.rename(first / path.name)
    swapped = _site_report(fed, cli, "site-a", other)  # signed by site-a, other figures
    b = _site_report(fed, cli, "site-b", other)
    for report in (swapped, b):
        for path in (report, report.with_name(report.name + ".sig")):
            shutil.copy(path, folder / path.name)
    sums = parse_sums((folder / "SHA256SUMS").read_text(), source="SHA256SUMS")
    from flsilo.format.artifact import sha256_file

    sums |= {p.name: sha256_file(p) for p in folder.iterdir() if p.name.startswith("r0001-")}
    (folder / "SHA256SUMS").write_text(render_sums(sums))
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--json")
    assert audit.code == 3
    failed = {
        c["name"]: c["detail"] for c in json.loads(audit.out)["audit"]["checks"] if not c["ok"]
    }
    assert failed == {
        f"evaluation report r0000 {a.name}": "archived report differs from the one the hub logged",
        f"evaluation report 0000/{b.name}": failed[f"evaluation report 0000/{b.name}"],
    }  # the sums themselves hold
    assert "not recorded in the log" in failed[f"evaluation report 0000/{b.name}"]


def test_a_revoked_sites_report_does_not_count(
    tmp_path: Path, cli, one_shot_with_report, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with bundles, the log orders trust: a report dated before its site's revocation
    (a stolen key backdates it) is refused at the hub afterwards, and an archived one stops
    counting."""
    import time

    # the revocations cut a minute from now: the reports' times stay inside their keys' validity
    monkeypatch.setattr("hub_kit.enrolment.end_of_validity", lambda _ws, _s: int(time.time()) + 60)
    fed, a = one_shot_with_report()
    held_out = tmp_path / "held-out.npz"
    b = _site_report(fed, cli, "site-b", held_out)
    assert cli("hub", "evaluations", fed.hub, "--inbox", b.parent, "--archive").code == 0
    assert _status(fed, cli)["sites"] == ["site-b"]
    for site in ("site-a", "site-b"):
        assert cli("hub", "revoke", fed.hub, site).code == 0
    standing = _status(fed, cli)
    assert standing["sites"] == [] and not standing["final"]
    taken = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive", "--json")
    assert taken.code == 3
    doc = json.loads(taken.out)
    assert doc["archived_now"] == [] and doc["finality"]["pending"] == []
    assert [(r["code"], Path(r["path"]).name) for r in doc["refused"]] == [("key-revoked", a.name)]
    assert not (fed.hub / "rounds" / "0000" / a.name).exists()
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0  # b was logged before revoke


def test_a_report_logged_before_revocation_stays_verified(
    tmp_path: Path, cli, one_shot_with_report, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archived report is judged at the time the hub logged it, as bundles are: a report
    logged before its site's revocation but dated after the revocation's cut (the site's clock
    runs fast) is not refused afterwards; the same report still in an inbox is."""
    import time

    # the revocation cut an hour ago: the report's own time is after it
    cut = int(time.time()) - 3600
    monkeypatch.setattr("hub_kit.enrolment.end_of_validity", lambda _ws, _s: cut)
    fed, a = one_shot_with_report()
    assert cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--archive").code == 0
    assert cli("hub", "revoke", fed.hub, "site-a").code == 0
    shown = cli("hub", "evaluations", fed.hub, "--json")
    assert shown.code == 0, shown.out
    doc = json.loads(shown.out)
    assert doc["refused"] == [] and [Path(r["file"]).name for r in doc["reports"]] == [a.name]
    card = tmp_path / "card"
    made = cli("report", fed.hub / "packages" / FINAL, "--hub", fed.hub, *hub_root(fed.hub),
               "--out", card)  # fmt: skip
    assert made.code == 0, made.err
    assert ": 1 signed evaluation report, 2 packages," in " ".join(made.err.split())
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0
    pending = cli("hub", "evaluations", fed.hub, "--inbox", a.parent, "--json")
    assert pending.code == 3  # not logged from there: judged as now, after the revocation
    assert [Path(r["path"]).name for r in json.loads(pending.out)["refused"]] == [a.name]
    # copied into the hub's own inbox (which the hub never empties), the logged bytes are the
    # archived report's: shown once, judged as logged, not refused
    for f in (a, a.with_name(a.name + ".sig")):
        shutil.copy2(f, fed.hub / "inbox" / f.name)
    own = cli("hub", "evaluations", fed.hub, "--json")
    assert own.code == 0, own.out
    doc = json.loads(own.out)
    assert doc["refused"] == [] and [r["archived"] for r in doc["reports"]] == [True]
