"""``aggregate --dry-run`` and ``hub status --inbox``: one report, nothing changed, no key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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


def test_dry_run_does_not_import_torch(federation_template: Federation) -> None:
    hub = federation_template.hub
    code = (
        "import sys\nfrom flsilo.cli.app import run\n"
        f"rc = run(['aggregate', {str(hub)!r}, '--dry-run', '--inbox', {str(hub / 'inbox')!r}])\n"
        f"rc2 = run(['hub', 'history', {str(hub)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc2)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_aggregate_asks_no_passphrase_before_it_will_sign(
    federation: Federation, cli, monkeypatch
) -> None:
    from flsilo.keys import load_private_key, private_key_bytes

    key = load_private_key(federation.keys / "hub", lambda _p: b"")
    (federation.keys / "hub").write_bytes(private_key_bytes(key, b"secret"))
    monkeypatch.delenv("FLSILO_PASSPHRASE", raising=False)
    empty = cli("aggregate", federation.hub)  # nothing carried yet: no signature to make
    assert empty.code == 1 and "not-enough-sites" in empty.err and "passphrase" not in empty.err
    federation.carry()
    signing = cli("aggregate", federation.hub)  # now it would sign: the passphrase is needed
    assert signing.code == 1 and "error[key-passphrase]" in signing.err
