"""A hostile stick cannot stop a round: every file on it gets a verdict and the round goes on.

Each case is a repro from the attack run (issue 10): deep nesting, symlinks, FIFOs, huge or
unreadable files, a damaged .sig beside a genuine bundle. The round must complete with the
genuine bundles, the bad entry rejected with its own code, and nothing made more readable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import pytest

from flsilo.format import manifest as mf
from flsilo.format.tensorfile import MAX_JSON_DEPTH
from flsilo.signing.keys import load_private_key
from flsilo.signing.sshsig import sign_digest
from tests.conftest import Federation, tree_digest


def aggregate_rows(cli, hub: Path, *extra: object) -> dict[str, dict]:
    result = cli("aggregate", hub, "--json", *extra)
    assert result.code == 0, result.err
    return {r["file"]: r for r in json.loads(result.out)["report"]["rows"]}


def deep_header_file(depth: int, size: int = 0) -> bytes:
    """A header nested ``depth`` deep, padded to at least ``size`` bytes (a plausible size)."""
    text = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    text += b" " * max(-len(text) % 8, size - 8 - len(text))
    return struct.pack("<Q", len(text)) + text


def package_size(hub: Path) -> int:
    return (hub / "packages" / "fed-r0000.safetensors").stat().st_size


def signed(path: Path, data: bytes, key: Path) -> Path:
    """Bytes validly signed by an enrolled site, so only their structure can be blamed."""
    path.write_bytes(data)
    secret = load_private_key(key, lambda _p: b"")
    Path(f"{path}.sig").write_bytes(
        sign_digest(secret, "flsilo-bundle", hashlib.sha256(data).digest())
    )
    return path


def quarantined(hub: Path, name: str) -> list[Path]:
    return sorted(p for p in (hub / "quarantine" / "r0000").glob(f"*{name}*"))


def test_deep_nesting_is_rejected_and_the_round_completes(federation: Federation, cli) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    deep = deep_header_file(1000, package_size(federation.hub))
    signed(inbox / "deep.safetensors", deep, federation.keys / "site-a")
    rows = aggregate_rows(cli, federation.hub)
    assert rows["deep.safetensors"]["verdict"] == "rejected"
    assert rows["deep.safetensors"]["code"] == "too-deep"
    assert sum(r["verdict"] == "accepted" for r in rows.values()) == 2


def test_verify_reports_every_file_past_a_deep_one(federation: Federation, cli) -> None:
    good = federation.bundles["site-a"]
    deep = federation.root / "deep.safetensors"
    deep.write_bytes(deep_header_file(1000))
    result = cli(
        "verify", good, deep, federation.bundles["site-b"], "--signers",
        federation.hub / "allowed_signers", "--json",
    )  # fmt: skip
    assert result.code in (3, 4) and "Traceback" not in result.err
    assert str(deep) in result.out + result.err
    assert result.out.count("site-a") >= 1 and result.out.count("site-b") >= 1


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5000])
def test_deep_manifest_is_malformed_not_a_crash(tmp_path: Path, cli, depth: int) -> None:
    manifest = "[" * depth + "]" * depth
    header = json.dumps({"__metadata__": {mf.MANIFEST_KEY: manifest}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    result = cli("inspect", path, "--json")
    assert result.code == 4, result.err
    assert "too-deep" in result.out + result.err


def test_symlink_in_inbox_is_refused_by_name_and_never_read(
    federation: Federation, cli, tmp_path: Path
) -> None:
    federation.carry()
    secret = tmp_path / "secret.txt"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    link = federation.hub / "inbox" / "x.safetensors"
    link.symlink_to(secret)
    rows = aggregate_rows(cli, federation.hub)
    assert rows["x.safetensors"]["code"] == "not-regular-file"
    files = quarantined(federation.hub, "x.safetensors")
    assert [p.name for p in files] == ["unread-x.safetensors.reason.txt"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert "symbolic link" in json.loads(files[0].read_text())["message"]


def test_fifo_and_device_signature_do_not_hang_the_round(federation: Federation, cli) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    os.mkfifo(inbox / "fifo.safetensors")
    (inbox / "zero.safetensors").write_bytes(b"\0" * 64)
    (inbox / "zero.safetensors.sig").symlink_to("/dev/zero")
    fifo_sig = inbox / "f2.safetensors"
    fifo_sig.write_bytes(b"\0" * 64)
    os.mkfifo(inbox / "f2.safetensors.sig")
    rows = aggregate_rows(cli, federation.hub)
    assert rows["fifo.safetensors"]["code"] == "not-regular-file"
    assert rows["zero.safetensors"]["verdict"] == "rejected"
    assert rows["f2.safetensors"]["verdict"] == "rejected"
    assert sum(r["verdict"] == "accepted" for r in rows.values()) == 2


def test_huge_signature_and_bundle_are_refused_from_their_size(federation: Federation, cli) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    sig = inbox / "fed-r0000-site-a.safetensors.sig"
    os.truncate(sig, 3 << 30)  # sparse: 3 GiB that cost no disk
    big = inbox / "big.safetensors"
    big.touch()
    os.truncate(big, 3 << 30)
    rows = aggregate_rows(cli, federation.hub, "--min-sites", "1")
    assert rows["fed-r0000-site-a.safetensors"]["code"] == "signature-too-large"
    assert rows["big.safetensors"]["code"] == "implausible-size"
    assert rows["fed-r0000-site-b.safetensors"]["verdict"] == "accepted"
    assert not any(p.stat().st_size > (1 << 20) for p in (federation.hub / "quarantine").rglob("*"))


def test_unreadable_bundle_and_signature_are_rejects_not_aborts(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection (CI runs as root, where chmod 000 blocks nothing)."""
    federation.carry()
    real_open = os.open
    other = federation.hub / "inbox" / "other.safetensors"
    other.write_bytes(federation.bundles["site-a"].read_bytes())
    Path(f"{other}.sig").write_bytes(Path(f"{federation.bundles['site-a']}.sig").read_bytes())
    blocked = {"fed-r0000-site-a.safetensors", "other.safetensors.sig"}

    def deny(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(str(path)).name in blocked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("flsilo.fs.untrusted.os.open", deny)
    rows = aggregate_rows(cli, federation.hub, "--min-sites", "1")
    assert rows["fed-r0000-site-a.safetensors"]["code"] == "unreadable"
    assert rows["other.safetensors"]["code"] == "unreadable"
    assert rows["fed-r0000-site-b.safetensors"]["verdict"] == "accepted"
    reasons = [p.name for p in (federation.hub / "quarantine" / "r0000").iterdir()]
    assert "unread-fed-r0000-site-a.safetensors.reason.txt" in reasons


def test_symlinked_hub_inbox_is_refused_but_an_explicit_linked_inbox_works(
    federation: Federation, cli, tmp_path: Path
) -> None:
    stick = tmp_path / "stick"
    (federation.hub / "inbox").rename(stick)
    (federation.hub / "inbox").symlink_to(stick)
    federation.carry()
    result = cli("aggregate", federation.hub)
    assert result.code == 1 and "inbox-symlink" in result.err
    mount = tmp_path / "media-link"
    mount.symlink_to(stick)
    assert cli("aggregate", federation.hub, "--inbox", mount).code == 0


def test_quarantine_copies_are_private_and_come_from_the_single_read(
    federation: Federation, cli
) -> None:
    federation.carry()
    bad = federation.hub / "inbox" / "fed-r0000-site-c.safetensors"
    bad.write_bytes(federation.bundles["site-a"].read_bytes())
    Path(f"{bad}.sig").write_bytes(Path(f"{federation.bundles['site-b']}.sig").read_bytes())
    bad.chmod(0o644)
    rows = aggregate_rows(cli, federation.hub)
    assert rows[bad.name]["verdict"] == "rejected"
    for path in (federation.hub / "quarantine").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_damaged_signature_beside_the_genuine_bundle_reads_clearly(
    federation: Federation, cli
) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    copy = inbox / "copy-of-a.safetensors"
    copy.write_bytes(federation.bundles["site-a"].read_bytes())
    Path(f"{copy}.sig").write_bytes(b"-----BEGIN SSH SIGNATURE-----\ngarbage\n")
    rows = aggregate_rows(cli, federation.hub)
    assert rows["fed-r0000-site-a.safetensors"]["verdict"] == "accepted"
    assert rows[copy.name]["code"] == "signature-damaged"
    assert "accepted from fed-r0000-site-a.safetensors" in rows[copy.name]["reason"]


def test_archived_signature_is_the_exact_verified_bytes(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    for site, bundle in federation.bundles.items():
        archived = federation.hub / "rounds" / "0000" / f"{bundle.name}.sig"
        assert archived.read_bytes() == Path(f"{bundle}.sig").read_bytes(), site


def test_dry_run_intake_writes_nothing(federation: Federation) -> None:
    from hub_kit.aggregate import preview

    federation.carry()
    deep = deep_header_file(1000, package_size(federation.hub))
    signed(federation.hub / "inbox" / "deep.safetensors", deep, federation.keys / "site-a")
    before = tree_digest(federation.hub)
    report = preview(federation.hub)
    assert report.package is None
    verdicts = {r.file: (r.verdict, r.code) for r in report.rows}
    assert verdicts["deep.safetensors"] == ("rejected", "too-deep")
    assert verdicts["fed-r0000-site-a.safetensors"][0] == "accepted"
    assert tree_digest(federation.hub) == before
