"""SSHSIG: byte-exact with ssh-keygen -Y, both ways; strict parsing; namespaces."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flsilo.runtime.errors import MalformedInputError, VerificationError
from flsilo.signing.keys import generate_key, load_private_key, write_new_key
from flsilo.signing.sshsig import check_signature, parse_signature, sign_digest
from tests.conftest import needs_ssh_keygen, ssh_keygen, stock_verify

MESSAGE = b"weights crossing the air gap\n" * 100


def test_sign_and_check() -> None:
    key = generate_key()
    sig = parse_signature(sign_digest(key, "flsilo-bundle", hashlib.sha256(MESSAGE).digest()))
    check_signature(sig, "flsilo-bundle", hashlib.sha256(MESSAGE).digest(), source="m")
    with pytest.raises(VerificationError) as info:
        check_signature(sig, "flsilo-package", hashlib.sha256(MESSAGE).digest(), source="m")
    assert info.value.code == "wrong-namespace"
    with pytest.raises(VerificationError) as info:
        check_signature(sig, "flsilo-bundle", hashlib.sha256(MESSAGE + b"x").digest(), source="m")
    assert info.value.code == "bad-signature"


def test_noncanonical_armor_is_refused() -> None:
    armored = sign_digest(generate_key(), "flsilo-bundle", hashlib.sha256(MESSAGE).digest())
    for variant in (
        armored.replace(b"\n", b"\r\n"),
        armored.rstrip(b"\n"),
        armored + b"\n",
        b" " + armored,
    ):
        with pytest.raises(MalformedInputError):
            parse_signature(variant)


@needs_ssh_keygen
def test_ssh_keygen_verifies_our_signature(tmp_path: Path) -> None:
    public = write_new_key(tmp_path / "k", generate_key(), None, "site-a")
    key = load_private_key(tmp_path / "k", lambda _p: b"")
    (tmp_path / "msg").write_bytes(MESSAGE)
    (tmp_path / "msg.sig").write_bytes(
        sign_digest(key, "flsilo-bundle", hashlib.sha256(MESSAGE).digest())
    )
    (tmp_path / "allowed").write_text(
        f'site-a namespaces="flsilo-bundle" {public.openssh_line()}\n'
    )
    ok = stock_verify(
        str(tmp_path / "allowed"), "site-a", "flsilo-bundle", str(tmp_path / "msg.sig"), MESSAGE
    )
    assert ok.returncode == 0, ok.stderr
    wrong_ns = stock_verify(
        str(tmp_path / "allowed"), "site-a", "flsilo-package", str(tmp_path / "msg.sig"), MESSAGE
    )
    assert wrong_ns.returncode != 0


@needs_ssh_keygen
@pytest.mark.parametrize("hashalg", ["sha256", "sha512"])
def test_we_verify_ssh_keygen_signatures(tmp_path: Path, hashalg: str) -> None:
    key = tmp_path / "stock"
    ssh_keygen("-q", "-t", "ed25519", "-N", "", "-f", str(key))
    (tmp_path / "msg").write_bytes(MESSAGE)
    made = ssh_keygen(
        "-Y",
        "sign",
        "-f",
        str(key),
        "-n",
        "flsilo-bundle",
        "-O",
        f"hashalg={hashalg}",
        str(tmp_path / "msg"),
    )
    assert made.returncode == 0, made.stderr
    sig = parse_signature((tmp_path / "msg.sig").read_bytes())
    assert sig.hash_algorithm == hashalg
    check_signature(sig, "flsilo-bundle", hashlib.new(hashalg, MESSAGE).digest(), source="msg")


def test_damaged_embedded_key_is_a_malformed_signature() -> None:
    """Found by the tamper property: a byte changed inside the key blob's length field."""
    import base64

    armored = sign_digest(generate_key(), "flsilo-bundle", hashlib.sha256(MESSAGE).digest())
    blob = bytearray(base64.b64decode(b"".join(armored.splitlines()[1:-1])))
    blob[10 + 3] += 1  # the key blob's length: now runs one byte long
    from flsilo.signing.sshsig import armor

    with pytest.raises(MalformedInputError) as info:
        parse_signature(armor(bytes(blob)))
    assert info.value.exit_code == 4
