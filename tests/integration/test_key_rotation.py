"""Site key rotation (hub rekey): old bundles still audit, late old-key bundles are refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from flsilo.format.manifest import iso_to_epoch
from flsilo.signing.keys import load_private_key
from flsilo.signing.rotation import dump_chain
from flsilo.signing.sshsig import sign_digest
from flsilo.signing.trust import format_time
from tests.conftest import Federation, fingerprint, hub_root, make_key, needs_ssh_keygen, ssh_keygen


def train_next(fed: Federation, site: str, cli) -> Path:
    site_dir = fed.sites[site]
    for suffix in ("", ".sig"):
        shutil.copy(fed.hub / "packages" / f"fed-r0001.safetensors{suffix}", site_dir / "packages")
    result = cli("train", site_dir / "packages" / "fed-r0001.safetensors", "--site", site_dir)
    assert result.code == 0, result.err
    return site_dir / "outbox" / f"fed-r0001-{site}.safetensors"


@needs_ssh_keygen
def test_rekey_keeps_old_bundles_auditable_and_refuses_late_old_key_bundles(
    federation: Federation, cli
) -> None:
    fed = federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    new = make_key(fed.keys / "site-a-2027")
    new_pub = fed.keys / "site-a-2027.pub"
    wrong = cli("hub", "rekey", fed.hub, "site-a", new_pub, "--fingerprint", "SHA256:nope")
    assert wrong.code == 3 and "fingerprint-mismatch" in wrong.err
    done = cli("hub", "rekey", fed.hub, "site-a", new_pub, "--fingerprint", fingerprint(new_pub))
    assert done.code == 0, done.err
    # the bundle accepted under the old key still audits, with flsilo and with stock ssh-keygen
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0
    events = [json.loads(line) for line in (fed.hub / "events.jsonl").read_text().splitlines()]
    accepted = next(e for e in events if e["event"] == "accept" and e["site"] == "site-a")
    archived = fed.hub / "rounds" / "0000" / accepted["file"]
    stock = ssh_keygen(
        "-Y",
        "verify",
        "-f",
        str(fed.hub / "allowed_signers"),
        "-I",
        "site-a",
        "-n",
        "flsilo-bundle",
        f"-Overify-time={format_time(iso_to_epoch(accepted['time']))}",
        "-s",
        f"{archived}.sig",
        stdin=archived.read_bytes(),
    )
    assert stock.returncode == 0, stock.stderr
    # a bundle signed with the old key that arrives after the change is refused
    late = train_next(fed, "site-a", cli)
    shutil.copy(late, fed.hub / "inbox")
    shutil.copy(f"{late}.sig", fed.hub / "inbox")
    status = cli("aggregate", fed.hub, "--min-sites", "1", "--json")
    assert status.code == 1, status.out
    assert "key-revoked" in status.out
    # the same bundle signed with the new key is accepted
    key = load_private_key(new, lambda _p: b"")
    inbox_copy = fed.hub / "inbox" / late.name
    Path(f"{inbox_copy}.sig").write_bytes(
        sign_digest(key, "flsilo-bundle", hashlib.sha256(late.read_bytes()).digest())
    )
    assert cli("aggregate", fed.hub, "--min-sites", "1").code == 0
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0


def copy_package(fed: Federation, round_: int, site: str) -> Path:
    name = f"fed-r{round_:04d}.safetensors"
    for suffix in ("", ".sig"):
        shutil.copy(fed.hub / "packages" / f"{name}{suffix}", fed.sites[site] / "packages")
    return fed.sites[site] / "packages" / name


def test_hub_rotate_key_sites_follow_the_chain_from_the_confirmed_key(
    federation: Federation, cli
) -> None:
    fed = federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    for site in ("site-a", "site-b"):  # both train round 1 on the package signed by the old key
        late = train_next(fed, site, cli)
        for f in (late, Path(f"{late}.sig")):
            shutil.copy(f, fed.hub / "inbox")
    old_fp = fingerprint(fed.hub / "hub.pub")
    new = make_key(fed.keys / "hub-2027", "ecdsa-p256")
    rotated = cli("hub", "rotate-key", fed.hub, "--new-key", new, "--json")
    assert rotated.code == 0, rotated.err
    assert fingerprint(fed.hub / "hub.pub") == fingerprint(fed.keys / "hub-2027.pub") != old_fp
    assert cli("hub", "rotate-key", fed.hub, "--new-key", new).code == 2  # same key again
    back = cli("hub", "rotate-key", fed.hub, "--new-key", fed.keys / "hub")  # a retired key
    assert back.code == 2 and "same-key" in back.err, back.err
    # old packages audit under the key of their round
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0
    assert cli("aggregate", fed.hub).code == 0  # the final package, signed by the new key
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0
    final = copy_package(fed, 2, "site-a")
    chain = json.loads(cli("inspect", final, "--json").out)["manifest"]["package"]["key_chain"]
    assert len(chain) == 1
    # site-a confirmed the old key: it follows the statement to the new one (then refuses to
    # train the final package for the usual reason, after accepting its signature)
    followed = cli("train", final, "--site", fed.sites["site-a"])
    assert followed.code == 3 and "final-package" in followed.err, followed.err
    state = json.loads((fed.sites["site-a"] / "state.json").read_text())
    assert state["hub_key"].split()[1] == (fed.keys / "hub-2027.pub").read_text().split()[1]
    # a package whose chain was not signed by the old key is refused at a site
    final_b = copy_package(fed, 2, "site-b")
    from flsilo.format.artifact import scan_file, sig_path
    from flsilo.signing.rotation import make_rotation

    thief = make_key(fed.keys / "thief")
    forged = make_rotation(
        load_private_key(thief, lambda _p: b""),
        load_private_key(new, lambda _p: b""),
        "fed",
        1,
    )
    forged_body = json.loads(forged.statement)
    assert forged_body["old_key"] != json.loads(chain[0]["statement"])["old_key"]
    scan = scan_file(final_b)
    assert scan.manifest.package is not None
    from dataclasses import replace

    from flsilo.format.artifact import write_artifact
    from flsilo.format.tensorfile import RawTensor

    data = final_b.read_bytes()
    tensors = {
        t.name: RawTensor(t.dtype, t.shape, memoryview(data)[t.begin : t.end])
        for t in scan.header.tensors
    }
    tampered = replace(scan.manifest, package=replace(scan.manifest.package, key_chain=(forged,)))
    write_artifact(
        final_b, tensors, tampered, load_private_key(new, lambda _p: b""), overwrite=True
    )
    assert sig_path(final_b).exists()
    refused = cli("train", final_b, "--site", fed.sites["site-b"])
    assert refused.code == 3 and "final-package" not in refused.err, refused.err


def test_rekey_refuses_when_the_log_changed_while_the_key_was_unlocked(
    federation: Federation, monkeypatch
) -> None:
    """A rekey reads the hub state, then unlocks the hub key (the passphrase may take a
    while); if another command committed meanwhile, the rekey writes nothing and says so."""
    from flsilo.runtime.errors import FlsiloError
    from hub_kit import enrolment
    from hub_kit.workspace import HubWorkspace

    fed = federation
    ws = HubWorkspace.open(fed.hub)
    new_pub = make_key(fed.keys / "site-a-next").with_suffix(".pub")
    other_pub = make_key(fed.keys / "site-z").with_suffix(".pub")
    real_load = enrolment.load_private_key

    def slow_unlock(path: Path, passphrase):  # another administrator enrols a site meanwhile
        monkeypatch.setattr(enrolment, "load_private_key", real_load)
        enrolment.enroll(
            HubWorkspace.open(fed.hub),
            "site-z",
            other_pub,
            fingerprint(other_pub),
            passphrase=lambda _p: b"",
        )
        return real_load(path, passphrase)

    monkeypatch.setattr(enrolment, "load_private_key", slow_unlock)
    log_before = (fed.hub / "events.jsonl").read_bytes()
    try:
        enrolment.rekey(ws, "site-a", new_pub, fingerprint(new_pub), passphrase=lambda _p: b"")
    except FlsiloError as err:
        assert err.code == "log-changed" and err.exit_code == 2
    else:
        raise AssertionError("rekey went ahead on a log that changed under it")
    events = (fed.hub / "events.jsonl").read_bytes()
    assert events.startswith(log_before)
    added = [json.loads(line) for line in events[len(log_before) :].splitlines()]
    assert [e["event"] for e in added] == ["enroll"]  # the enrolment, and no rekey


def test_a_site_that_missed_the_current_package_follows_the_chain_beside_it(
    federation: Federation, cli, tmp_path: Path
) -> None:
    """rotate-key re-signs the current package; a site that confirmed the old key and has not
    received that package yet accepts it through PACKAGE.key-chain.json, and learns the new
    key; a chain that does not start at the site's key is refused with the foreign-hub hint."""
    from flsilo.signing.rotation import make_rotation
    from flsilo.signing.sshsig import parse_signature

    fed = federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0  # fed-r0001, signed by the old key
    old_fp = fingerprint(fed.hub / "hub.pub")
    new = make_key(fed.keys / "hub-2027")
    rotated = cli("hub", "rotate-key", fed.hub, "--new-key", new, "--json")
    assert rotated.code == 0, rotated.err
    package = fed.hub / "packages" / "fed-r0001.safetensors"
    carry = json.loads(rotated.out)["carry"]
    assert carry == [str(package), f"{package}.sig", f"{package}.key-chain.json"]
    kept = Path(f"{package}.pre-rotation-1.sig")  # the old key's signature is kept
    assert parse_signature(kept.read_bytes(), source=str(kept)).fingerprint == old_fp
    # the extra files are known, not strays
    assert cli("audit", fed.hub, *hub_root(fed.hub)).code == 0

    def stick_for(site: str, files: list[str]) -> Path:
        stick = tmp_path / f"stick-{site}"
        stick.mkdir(exist_ok=True)
        for f in files:
            shutil.copy(f, stick)
        return stick / package.name

    # without the statements the re-signed package is refused, and the hint says why
    bare = stick_for("site-a", carry[:2])
    refused = cli("train", bare, "--site", fed.sites["site-a"])
    assert refused.code == 3 and "unknown-signer" in refused.err
    assert "fed-r0001.safetensors.key-chain.json is not beside it" in refused.err
    assert "copy fed-r0001.safetensors.key-chain.json" in refused.err
    assert "damaged" not in refused.err.lower()
    # with them (as rotate-key says to carry), site-a follows the chain and trains
    followed = stick_for("site-a", carry)
    trained = cli("train", followed, "--site", fed.sites["site-a"])
    assert trained.code == 0, trained.err
    state = json.loads((fed.sites["site-a"] / "state.json").read_text())
    assert state["hub_key"].split()[1] == (fed.keys / "hub-2027.pub").read_text().split()[1]
    # site status still recognises the package the old key signed, and names both keys
    status = json.loads(cli("site", "status", fed.sites["site-a"], "--json").out)
    assert [p["state"] for p in status["packages"]] == ["ok"]  # fed-r0000, old key
    assert status["hub_fingerprint"] == fingerprint(fed.keys / "hub-2027.pub")
    assert status["confirmed_hub_fingerprint"] == old_fp
    # a newer package signed by the key the site moved on from is not offered to train
    from dataclasses import replace

    from flsilo.format.artifact import scan_file, write_artifact
    from flsilo.format.tensorfile import RawTensor

    scan = scan_file(package)
    data = package.read_bytes()
    tensors = {
        t.name: RawTensor(t.dtype, t.shape, memoryview(data)[t.begin : t.end])
        for t in scan.header.tensors
    }
    retired = load_private_key(fed.keys / "hub", lambda _p: b"")
    stale = fed.sites["site-a"] / "packages" / "fed-r0002.safetensors"
    write_artifact(stale, tensors, replace(scan.manifest, round=2), retired)
    status = json.loads(cli("site", "status", fed.sites["site-a"], "--json").out)
    assert [p["state"] for p in status["packages"]] == ["ok", "old-key"]  # r0000, r0002
    assert status["next_package"] is None
    # a chain signed by some other key, even one naming this federation, moves no trust
    thief = make_key(fed.keys / "thief")
    unlock = lambda p: load_private_key(p, lambda _p: b"")  # noqa: E731
    foreign = stick_for("site-b", carry[:2])
    Path(f"{foreign}.key-chain.json").write_text(
        dump_chain([make_rotation(unlock(thief), unlock(new), "fed", 1)])
    )
    refused = cli("train", foreign, "--site", fed.sites["site-b"])
    assert refused.code == 3 and "unknown-signer" in refused.err
    assert "not signed by your hub" in refused.err and "key-chain.json" in refused.err
    # the hub's own chain beside a package some other key signed: refused as foreign
    from flsilo.format.artifact import sig_path
    from flsilo.signing.sshsig import PACKAGE_NAMESPACE

    shutil.copy(carry[2], f"{foreign}.key-chain.json")
    digest = hashlib.sha256(foreign.read_bytes()).digest()
    sig_path(foreign).write_bytes(sign_digest(unlock(thief), PACKAGE_NAMESPACE, digest))
    refused = cli("train", foreign, "--site", fed.sites["site-b"])
    assert refused.code == 3 and "unknown-signer" in refused.err
    assert "not signed by your hub" in refused.err and "enrolled" not in refused.err
    shutil.copy(carry[1], sig_path(foreign))
    # and statements for another federation are a broken chain, not a way in
    Path(f"{foreign}.key-chain.json").write_text(
        dump_chain([make_rotation(unlock(fed.keys / "hub"), unlock(new), "other", 1)])
    )
    broken = cli("train", foreign, "--site", fed.sites["site-b"])
    assert broken.code == 3 and "rotation-broken" in broken.err
    assert "hub_key" not in json.loads((fed.sites["site-b"] / "state.json").read_text())
    # a second rotation a round later: the next package's manifest names the first statement
    # only, the file beside it both; site-b, still on the first key, follows both
    bundle = fed.sites["site-a"] / "outbox" / "fed-r0001-site-a.safetensors"
    for f in (bundle, Path(f"{bundle}.sig")):
        shutil.copy(f, fed.hub / "inbox")
    assert cli("aggregate", fed.hub, "--min-sites", "1").code == 0  # fed-r0002, chain [1]
    make_key(fed.keys / "hub-2028")
    again = cli("hub", "rotate-key", fed.hub, "--new-key", fed.keys / "hub-2028", "--json")
    assert again.code == 0, again.err
    carried = stick_for("site-b-2", json.loads(again.out)["carry"]).with_name(
        "fed-r0002.safetensors"
    )
    followed = cli("train", carried, "--site", fed.sites["site-b"])  # accepted, then refused:
    assert followed.code == 3 and "final-package" in followed.err, followed.err  # 2 rounds
    state = json.loads((fed.sites["site-b"] / "state.json").read_text())
    assert state["hub_key"].split()[1] == (fed.keys / "hub-2028.pub").read_text().split()[1]


def test_site_rekey_switches_to_the_key_the_hub_enrolled(federation: Federation, cli) -> None:
    """After 'hub rekey', 'site rekey' checks the new key against a kit made since, records
    the change in the site's hash-chained record and rewrites site.toml; the next bundle is
    signed with the new key and the hub accepts it."""
    from site_kit.record import Rekeyed, events, of_kind

    fed = federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    site = fed.sites["site-a"]
    new = make_key(fed.keys / "site-a-2027")
    new_pub = fed.keys / "site-a-2027.pub"
    stranger = make_key(fed.keys / "stranger")
    toml_before = (site / "site.toml").read_bytes()
    # the same key, or a key the hub has not enrolled, changes nothing
    same = cli("site", "rekey", site, "--key", fed.keys / "site-a")
    assert same.code == 2 and "same-key" in same.err
    rekeyed = cli("hub", "rekey", fed.hub, "site-a", new_pub, "--fingerprint", fingerprint(new_pub))
    assert rekeyed.code == 0, rekeyed.err
    kit = fed.root / "kit-site-a-2027"
    assert cli("hub", "kit", fed.hub, "site-a", "--out", kit).code == 0
    wrong = cli("site", "rekey", site, "--key", stranger, "--kit", kit)
    assert wrong.code == 3 and "site-key-mismatch" in wrong.err
    other_kit = fed.root / "kit-site-b"
    elsewhere = cli("site", "rekey", site, "--key", new, "--kit", other_kit)
    assert elsewhere.code == 2 and "kit-site" in elsewhere.err
    assert (site / "site.toml").read_bytes() == toml_before
    assert not list(of_kind(events(site), Rekeyed))
    # the enrolled key, checked against the new kit
    done = cli("site", "rekey", site, "--key", new, "--kit", kit, "--json")
    assert done.code == 0, done.err
    doc = json.loads(done.out)
    assert doc["new_fingerprint"] == fingerprint(new_pub) and doc["checked_against_kit"]
    assert [e.new_key for e in of_kind(events(site), Rekeyed)] == [fingerprint(new_pub)]
    # the bundle signed with the old key is not called damaged, and not offered to carry
    status = cli("site", "status", site, "--json")
    assert status.code == 0, status.out
    doc = json.loads(status.out)
    assert [b["state"] for b in doc["outbox"]] == ["old-key"] and doc["carry"] == []
    toml = (site / "site.toml").read_text()
    assert new_pub.read_text().split()[1] in toml and "site-a-2027" in toml
    # the next bundle is signed with the new key, and the hub accepts it
    bundle = train_next(fed, "site-a", cli)
    assert cli("verify", bundle, "--key", new_pub).code == 0
    for f in (bundle, Path(f"{bundle}.sig")):
        shutil.copy(f, fed.hub / "inbox")
    assert cli("aggregate", fed.hub, "--min-sites", "1").code == 0


def test_a_site_on_the_third_hub_key_never_follows_a_chain_back_to_a_key_it_left(
    federation: Federation, cli
) -> None:
    """'Never rotate back' holds across the site's whole history: after two rotations the site
    follows the third key; a package signed by the first key whose chain adds a statement from
    the third key back to the first (or the second), signed by both, is refused."""
    from dataclasses import replace

    from flsilo.format.artifact import scan_file, write_artifact
    from flsilo.format.tensorfile import RawTensor
    from flsilo.signing.rotation import load_chain, make_rotation

    fed = federation
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0  # fed-r0001, signed by the first key
    keys = [fed.keys / "hub", make_key(fed.keys / "hub-2"), make_key(fed.keys / "hub-3")]
    for new in keys[1:]:
        rotated = cli("hub", "rotate-key", fed.hub, "--new-key", new, "--json")
        assert rotated.code == 0, rotated.err
    carry = json.loads(rotated.out)["carry"]
    site = fed.sites["site-a"]
    for f in carry:
        shutil.copy(f, site / "packages")
    package = site / "packages" / "fed-r0001.safetensors"
    trained = cli("train", package, "--site", site)  # follows both statements at once
    assert trained.code == 0, trained.err
    state = json.loads((site / "state.json").read_text())
    blob = lambda p: Path(f"{p}.pub").read_text().split()[1]  # noqa: E731
    assert state["hub_key"].split()[1] == blob(keys[2])
    assert [k.split()[1] for k in state["hub_keys_before"]] == [blob(keys[0]), blob(keys[1])]
    unlock = lambda p: load_private_key(p, lambda _p: b"")  # noqa: E731
    chain = load_chain(Path(carry[2]).read_bytes(), source=carry[2])
    scan = scan_file(package)
    data = package.read_bytes()
    tensors = {
        t.name: RawTensor(t.dtype, t.shape, memoryview(data)[t.begin : t.end])
        for t in scan.header.tensors
    }
    for back_to in keys[:2]:  # whoever holds the third key and an old one
        forged = site / "packages" / f"fed-r0002-{back_to.name}.safetensors"
        write_artifact(forged, tensors, replace(scan.manifest, round=2), unlock(back_to))
        back = make_rotation(unlock(keys[2]), unlock(back_to), "fed", 3)
        Path(f"{forged}.key-chain.json").write_text(dump_chain([*chain, back]))
        refused = cli("train", forged, "--site", site)
        assert refused.code == 3 and "rotation-broken" in refused.err, refused.err
        assert "leads back to a hub key already left" in refused.err
        assert json.loads((site / "state.json").read_text())["hub_key"] == state["hub_key"]
