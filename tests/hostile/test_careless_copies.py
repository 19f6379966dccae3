"""A stick copied carelessly: a bundle cut short, names a file manager or a FAT stick changed.

Each is refused as before (flsilo never trusts a file by a name it guessed), but the line
says what happened and what to do: copy again, or rename the file back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import Federation, tree_digest


def stick_report(cli, federation: Federation, stick: Path) -> tuple[dict, dict[str, dict]]:
    result = cli("hub", "status", federation.hub, "--inbox", stick, "--json")
    doc = json.loads(result.out)["report"]
    return doc, {r["file"]: r for r in doc["rows"]}


def test_a_copy_cut_short_says_copy_it_again(federation: Federation, cli) -> None:
    stick = federation.root / "stick"
    stick.mkdir()
    bundle = federation.bundles["site-a"]
    cut = stick / bundle.name
    cut.write_bytes(bundle.read_bytes()[:2000])  # the stick pulled mid-copy
    shutil.copy(f"{bundle}.sig", stick)
    before = tree_digest(stick)
    _, rows = stick_report(cli, federation, stick)
    row = rows[bundle.name]
    assert row["code"] == "implausible-size" and "2000 bytes" in row["reason"]
    assert "copy the bundle and its .sig again from the site's outbox" in row["hint"]
    assert tree_digest(stick) == before


def test_a_renamed_sig_is_named_in_the_hint(federation: Federation, cli) -> None:
    stick = federation.root / "stick"
    stick.mkdir()
    a, b = federation.bundles["site-a"], federation.bundles["site-b"]
    shutil.copy(a, stick)
    shutil.copy(f"{a}.sig", stick / f"{a.name} (1).sig")  # a file manager's second copy
    shutil.copy(b, stick)
    shutil.copy(f"{b}.sig", stick / f"{b.name}.SIG")  # shown in upper case
    other = stick / "fed-r0000-site-c.safetensors"
    shutil.copy(b, other)  # a .sig with its own file beside it is never offered
    _, rows = stick_report(cli, federation, stick)
    assert rows[a.name]["code"] == "missing-signature"
    assert f"{a.name} (1).sig is beside it" in rows[a.name]["hint"]
    assert f"rename it to {b.name}.sig and run again" in rows[b.name]["hint"]
    assert "copy fed-r0000-site-c.safetensors.sig along" in rows[other.name]["hint"]
    verified = cli(
        "verify", *sorted(stick.iterdir()), "--signers", federation.hub / "allowed_signers"
    )
    assert verified.code == 3
    assert f"{b.name}.SIG.sig" not in verified.err  # a .SIG is a signature, not an artifact
    assert f"{b.name}.SIG is beside it" in verified.err


def test_an_upper_case_bundle_is_not_read_but_named(federation: Federation, cli) -> None:
    stick = federation.root / "stick"
    stick.mkdir()
    b = federation.bundles["site-b"]
    shouted = stick / b.name.upper()
    shutil.copy(b, shouted)
    shutil.copy(f"{b}.sig", stick / f"{b.name.upper()}.SIG")
    stem = b.name.upper().removesuffix(".SAFETENSORS")
    line = (
        f"{shouted.name}: not read: flsilo reads files named *.safetensors (lower case); "
        f"if it is a bundle or package, rename it to {stem}.safetensors and its .sig to "
        f"{stem}.safetensors.sig"
    )
    alone = cli("hub", "status", federation.hub, "--inbox", stick)  # nothing else to read
    assert alone.code == 2 and f"error[empty-inbox]: {stick}:" in alone.err
    assert f"(hint: {line})" in alone.err
    shutil.copy(federation.bundles["site-a"], stick)
    shutil.copy(f"{federation.bundles['site-a']}.sig", stick)
    doc, rows = stick_report(cli, federation, stick)
    assert list(rows) == [federation.bundles["site-a"].name]  # a guessed name is never read
    assert doc["misnamed"] == [line]
    text = cli("hub", "status", federation.hub, "--inbox", stick)
    assert f"warning: {shouted.name}: not read" in text.err.replace("\n", " ")
    assert text.code == 3  # a courier's check fails: the stick holds a file the round skips


def test_site_status_names_a_package_whose_extension_a_copy_changed(
    federation: Federation, cli
) -> None:
    site = federation.sites["site-a"]
    package = site / "packages" / "fed-r0000.safetensors"
    shouted = site / "packages" / "FED-R0001.SAFETENSORS"
    shutil.copy(package, shouted)  # the next package, as a FAT stick showed its name
    shutil.copy(f"{package}.sig", f"{shouted}.SIG")
    doc = json.loads(cli("site", "status", site, "--json").out)
    assert [p["file"] for p in doc["packages"]] == [package.name]  # never read
    assert doc["misnamed"] == [
        "FED-R0001.SAFETENSORS: not read: flsilo reads files named *.safetensors (lower "
        "case); if it is a bundle or package, rename it to FED-R0001.safetensors and its "
        ".sig to FED-R0001.safetensors.sig"
    ]
    text = cli("site", "status", site)
    assert text.code == 0 and "warning: FED-R0001.SAFETENSORS: not read" in text.err
