"""Site key rotation (hub rekey): old bundles still audit, late old-key bundles are refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from flsilo.keys import load_private_key
from flsilo.manifest import iso_to_epoch
from flsilo.sshsig import sign_digest
from flsilo.trust import format_time
from tests.conftest import Federation, fingerprint, make_key, needs_ssh_keygen, ssh_keygen


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
    assert cli("audit", fed.hub, "--replay").code == 0
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
    assert cli("audit", fed.hub).code == 0
