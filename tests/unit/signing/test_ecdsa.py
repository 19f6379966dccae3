"""ECDSA P-256 keys work for every role beside Ed25519, both ways with stock ssh-keygen."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from flsilo.runtime.errors import KeyFileError, MalformedInputError, VerificationError
from flsilo.signing.keys import (
    ECDSA_P256,
    generate_key,
    load_private_key,
    load_public_key,
    write_new_key,
)
from flsilo.signing.sshsig import armor, check_signature, parse_signature, sign_digest
from flsilo.signing.sshwire import WireReader, pack_string, pack_uint32
from tests.conftest import needs_ssh_keygen, ssh_keygen, stock_verify

MESSAGE = b"a package that crossed the air gap\n"


def test_keys_new_type_ecdsa_p256_writes_an_openssh_p256_key(tmp_path: Path, cli) -> None:
    result = cli("keys", "new", tmp_path / "k", "--type", "ecdsa-p256", "--no-passphrase")
    assert result.code == 0
    public = load_public_key(tmp_path / "k.pub")
    assert public.key_type == ECDSA_P256
    assert (tmp_path / "k.pub").read_text().startswith("ecdsa-sha2-nistp256 ")
    assert result.out.strip() == public.fingerprint
    loaded = load_private_key(tmp_path / "k", lambda _p: b"")
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)


def test_keys_new_default_stays_ed25519_and_unknown_type_is_a_usage_error(
    tmp_path: Path, cli
) -> None:
    assert cli("keys", "new", tmp_path / "d", "--no-passphrase").code == 0
    assert load_public_key(tmp_path / "d.pub").key_type == "ssh-ed25519"
    bad = cli("keys", "new", tmp_path / "r", "--type", "rsa", "--no-passphrase")
    assert bad.code == 2
    assert "ecdsa-p256" in bad.err
    assert not (tmp_path / "r").exists()


def test_p256_signature_round_trip_and_tamper() -> None:
    key = generate_key("ecdsa-p256")
    digest = hashlib.sha256(MESSAGE).digest()
    sig = parse_signature(sign_digest(key, "flsilo-package", digest))
    check_signature(sig, "flsilo-package", digest, source="m")
    with pytest.raises(VerificationError) as info:
        check_signature(sig, "flsilo-package", hashlib.sha256(b"other").digest(), source="m")
    assert info.value.code == "bad-signature"


def _resign_with_padded_mpint(armored: bytes) -> bytes:
    """The same ECDSA signature with a redundant leading zero on r: not canonical."""
    blob = parse_signature(armored)
    reader = WireReader(blob.signature)
    r, s = reader.string(), reader.string()
    sig_blob = pack_string(ECDSA_P256.encode()) + pack_string(
        pack_string(b"\x00" + r) + pack_string(s)
    )
    return armor(
        b"SSHSIG"
        + pack_uint32(1)
        + pack_string(blob.public_key.blob)
        + pack_string(blob.namespace.encode())
        + pack_string(b"")
        + pack_string(b"sha256")
        + pack_string(sig_blob)
    )


def test_non_canonical_ecdsa_signature_never_verifies() -> None:
    key = generate_key("ecdsa-p256")
    digest = hashlib.sha256(MESSAGE).digest()
    padded = parse_signature(_resign_with_padded_mpint(sign_digest(key, "flsilo-bundle", digest)))
    with pytest.raises(VerificationError):
        check_signature(padded, "flsilo-bundle", digest, source="m")


def test_p384_public_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    p384 = ec.generate_private_key(ec.SECP384R1())
    line = p384.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    (tmp_path / "k.pub").write_bytes(line + b"\n")
    with pytest.raises(KeyFileError) as info:
        load_public_key(tmp_path / "k.pub")
    assert info.value.code == "key-type"
    (tmp_path / "k").write_bytes(
        p384.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "k", lambda _p: b"")
    assert info.value.code == "key-type"
    assert "P-256" in info.value.message


def test_malformed_p256_point_is_refused() -> None:
    from flsilo.signing.keys import parse_public_blob

    blob = pack_string(ECDSA_P256.encode()) + pack_string(b"nistp256") + pack_string(b"\x04" * 65)
    with pytest.raises(KeyFileError) as info:
        parse_public_blob(blob)
    assert info.value.code == "key-malformed"


def test_garbled_ecdsa_signature_blob_is_malformed() -> None:
    key = generate_key("ecdsa-p256")
    armored = sign_digest(key, "flsilo-bundle", hashlib.sha256(MESSAGE).digest())
    blob = parse_signature(armored)
    bad = armor(
        b"SSHSIG"
        + pack_uint32(1)
        + pack_string(blob.public_key.blob)
        + pack_string(b"flsilo-bundle")
        + pack_string(b"")
        + pack_string(b"sha256")
        + pack_string(pack_string(b"ssh-ed25519") + pack_string(b"\x00" * 64))
    )
    with pytest.raises(MalformedInputError):
        parse_signature(bad)


@needs_ssh_keygen
def test_ssh_keygen_reads_and_verifies_our_p256_key_and_signature(tmp_path: Path) -> None:
    public = write_new_key(tmp_path / "k", generate_key("ecdsa-p256"), b"pw", "site-a")
    assert ssh_keygen("-lf", str(tmp_path / "k.pub")).stdout.decode().split()[1] == (
        public.fingerprint
    )
    derived = ssh_keygen("-y", "-P", "pw", "-f", str(tmp_path / "k"))
    assert derived.returncode == 0
    assert derived.stdout.decode().split()[:2] == public.openssh_line().split()[:2]
    key = load_private_key(tmp_path / "k", lambda _p: b"pw")
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
    bad = stock_verify(
        str(tmp_path / "allowed"),
        "site-a",
        "flsilo-bundle",
        str(tmp_path / "msg.sig"),
        MESSAGE + b"x",
    )
    assert bad.returncode != 0


@needs_ssh_keygen
@pytest.mark.parametrize("passphrase", ["", "stock-pass"])
def test_stock_ssh_keygen_ecdsa_key_and_signature_work_in_flsilo(
    tmp_path: Path, passphrase: str
) -> None:
    key_path = tmp_path / "stock"
    # 1 bcrypt round, not ssh-keygen's 16 (about 0.1 s for each of the three unlocks here);
    # a stock key at its default rounds loads in tests/unit/signing/test_keys.py (slow tier)
    made = ssh_keygen(
        "-q", "-t", "ecdsa", "-b", "256", "-N", passphrase, "-a", "1", "-f", str(key_path)
    )
    assert made.returncode == 0
    key = load_private_key(key_path, lambda _p: passphrase.encode())
    public = load_public_key(tmp_path / "stock.pub")
    assert public.key_type == ECDSA_P256
    assert public.raw == public.from_key(key.public_key()).raw
    (tmp_path / "msg").write_bytes(MESSAGE)
    signed = ssh_keygen(
        "-Y",
        "sign",
        "-f",
        str(key_path),
        "-P",
        passphrase,
        "-n",
        "flsilo-package",
        str(tmp_path / "msg"),
    )
    assert signed.returncode == 0, signed.stderr
    sig = parse_signature((tmp_path / "msg.sig").read_bytes())
    assert sig.public_key.blob == public.blob
    digest = hashlib.new(sig.hash_algorithm, MESSAGE).digest()  # ssh-keygen hashes with sha512
    check_signature(sig, "flsilo-package", digest, source="msg")
