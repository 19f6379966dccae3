"""``aggregate --dry-run`` and ``hub status --inbox``: one report, nothing changed, no key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import Federation, tree_digest


def _tampered_copy(federation: Federation, inbox: Path) -> None:
    bad = inbox / "fed-r0000-site-z.safetensors"
    shutil.copy(federation.bundles["site-b"], bad)
    shutil.copy(f"{federation.bundles['site-b']}.sig", f"{bad}.sig")
    data = bytearray(bad.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))


def test_dry_run_reports_verdicts_and_changes_nothing(federation: Federation, cli) -> None:
    stick = federation.root / "stick"
    stick.mkdir()
    for site in ("site-a", "site-b"):
        b = federation.bundles[site]
        shutil.copy(b, stick / b.name)
        shutil.copy(f"{b}.sig", stick / f"{b.name}.sig")
    _tampered_copy(federation, stick)
    (federation.keys / "hub").rename(federation.root / "hub-key-elsewhere")  # no key at all
    before_hub, before_stick = tree_digest(federation.hub), tree_digest(stick)

    dry = cli("aggregate", federation.hub, "--inbox", stick, "--dry-run", "--json")
    assert dry.code == 3, dry.err  # a bundle on the stick would be rejected
    doc = json.loads(dry.out)
    assert doc["dry_run"] is True and doc["accepted"] == 2 and doc["rejected"] == 1
    verdicts = {r["file"]: (r["verdict"], r["code"]) for r in doc["report"]["rows"]}
    assert verdicts["fed-r0000-site-z.safetensors"] == ("rejected", "bad-signature")
    assert verdicts["fed-r0000-site-a.safetensors"][0] == "accepted"
    shares = [r["share"] for r in doc["report"]["rows"] if r["verdict"] == "accepted"]
    assert abs(sum(shares) - 1) < 1e-9

    status = cli("hub", "status", federation.hub, "--inbox", stick, "--json")
    assert status.code == 3
    assert json.loads(status.out)["report"] == doc["report"]  # one report, two names

    text = cli("aggregate", federation.hub, "--inbox", stick, "--dry-run")
    assert "dry run, nothing changed: 2 would be accepted, 1 rejected" in text.err
    assert tree_digest(federation.hub) == before_hub and tree_digest(stick) == before_stick

    (stick / "fed-r0000-site-z.safetensors").unlink()
    clean = cli("hub", "status", federation.hub, "--inbox", stick)
    assert clean.code == 0, clean.err
    assert f"flsilo aggregate {federation.hub} --inbox {stick}" in clean.err


def test_dry_run_of_an_empty_stick_is_one_line(federation: Federation, cli) -> None:
    empty = federation.root / "empty"
    empty.mkdir()
    result = cli("aggregate", federation.hub, "--inbox", empty, "--dry-run")
    assert result.code == 2 and "error[empty-inbox]" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_round_that_needs_more_sites_than_are_enrolled_says_so(
    federation: Federation, cli
) -> None:
    federation.carry()
    result = cli("aggregate", federation.hub, "--min-sites", "3")
    assert result.code == 1 and "error[not-enough-sites]" in result.err
    assert "only 2 of the 3 required bundles verified for round 0; missing: none" in result.err
    assert "only 2 site(s) are enrolled and active and the round needs 3 bundles" in result.err
    assert "flsilo hub enroll" in result.err


def test_aggregate_asks_no_passphrase_before_it_will_sign(
    federation: Federation, cli, monkeypatch
) -> None:
    from flsilo.signing.keys import load_private_key, private_key_bytes

    key = load_private_key(federation.keys / "hub", lambda _p: b"")
    (federation.keys / "hub").write_bytes(private_key_bytes(key, b"secret"))
    monkeypatch.delenv("FLSILO_PASSPHRASE", raising=False)
    empty = cli("aggregate", federation.hub)  # nothing carried yet: no signature to make
    assert empty.code == 1 and "not-enough-sites" in empty.err and "passphrase" not in empty.err
    federation.carry()
    signing = cli("aggregate", federation.hub)  # now it would sign: the passphrase is needed
    assert signing.code == 1 and "error[key-passphrase]" in signing.err


def _table(text: str) -> tuple[str, list[str]]:
    """The report table's header line and its rows (the lines between its rule and the
    first line that is not a row)."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    rows = []
    for line in lines[rule + 1 :]:
        if line.split()[1:2] not in (["accepted"], ["rejected"], ["skipped"], ["late"]):
            break
        rows.append(line)
    return lines[rule - 1], rows


def test_dry_run_and_real_report_share_columns_and_one_row_per_file(
    federation: Federation, cli, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    inbox = federation.hub / "inbox"
    b = federation.bundles["site-a"]  # carried under a name of the site's own choosing
    shutil.copy(b, inbox / "from-a.safetensors")
    shutil.copy(f"{b}.sig", inbox / "from-a.safetensors.sig")
    federation.carry("site-b")
    _tampered_copy(federation, inbox)
    dry = cli("aggregate", federation.hub, "--dry-run")
    real = cli("aggregate", federation.hub)
    assert dry.code == 3 and real.code == 0, real.err
    (dry_header, dry_rows), (real_header, real_rows) = _table(dry.err), _table(real.err)
    assert dry_header.split() == real_header.split()
    assert dry_header.split() == [
        "site", "verdict", "samples", "share", "norm", "dist.", "cos.", "val.", "acc.",
    ]  # fmt: skip
    for text, rows in ((dry.err, dry_rows), (real.err, real_rows)):
        assert [r.split()[:2] for r in rows] == [
            ["site-a", "accepted"], ["site-b", "accepted"], ["site-z", "rejected"],
        ]  # fmt: skip
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "site-a (from-a.safetensors): accepted" in text
        assert "site-z (r0000-site-z): " in text and "(bad-signature)" in text


def test_a_revoked_sites_bundle_gets_the_hubs_hint(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("hub", "revoke", federation.hub, "site-b").code == 0
    for args in (("--dry-run",), ("--min-sites", "1")):
        result = cli("aggregate", federation.hub, "--json", *args)
        rows = {r["site"]: r for r in json.loads(result.out)["report"]["rows"]}
        refused = rows["site-b"]
        assert refused["verdict"] == "rejected" and refused["code"] == "key-revoked"
        assert refused["hint"].startswith("site-b was revoked at 20")
        assert "; refused; nothing to do" in refused["hint"]
    reasons = list((federation.hub / "quarantine").rglob("*site-b*.reason.txt"))
    assert reasons and "nothing to do" in json.loads(reasons[0].read_text())["hint"]
