"""Keys: flsilo's own and stock ssh-keygen's are interchangeable; bad keys fail clearly."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flsilo.runtime.errors import KeyFileError, UsageError
from flsilo.signing import keys
from flsilo.signing.keys import (
    KDF_ROUNDS,
    generate_key,
    load_private_key,
    load_public_key,
    write_new_key,
)
from flsilo.signing.sshwire import WireReader
from tests.conftest import needs_ssh_keygen, ssh_keygen


def kdf_rounds(path: Path) -> tuple[str, int]:
    body = "".join(path.read_text().strip().splitlines()[1:-1])
    blob = base64.b64decode(body)[len(b"openssh-key-v1\x00") :]
    reader = WireReader(blob)
    cipher = reader.text()
    kdf = reader.text()
    options = WireReader(reader.string())
    options.string()
    return f"{cipher}/{kdf}", options.uint32()


def check_new_encrypted_key(tmp_path: Path, rounds: int) -> None:
    key = tmp_path / "k"
    public = write_new_key(key, generate_key(), b"secret", "site-a")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert kdf_rounds(key) == ("aes256-ctr/bcrypt", rounds)
    assert load_public_key(tmp_path / "k.pub") == public
    loaded = load_private_key(key, lambda _p: b"secret")
    assert loaded.public_key().public_bytes_raw() == public.raw


def test_new_key_is_encrypted_with_bcrypt_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is written with the rounds keys.KDF_ROUNDS says (3 here, not flsilo's 64:
    a second of bcrypt for a write and an unlock; the slow tier's twin below runs them)."""
    assert KDF_ROUNDS >= 64  # the value imported before tests/conftest.py lowers it
    monkeypatch.setattr(keys, "KDF_ROUNDS", 3)
    check_new_encrypted_key(tmp_path, 3)


@pytest.mark.slow
@pytest.mark.real_kdf
def test_new_key_is_encrypted_with_flsilos_bcrypt_rounds(tmp_path: Path) -> None:
    check_new_encrypted_key(tmp_path, KDF_ROUNDS)


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    write_new_key(tmp_path / "k", generate_key(), b"secret", "x")
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "k", lambda _p: b"wrong")
    assert info.value.code == "key-passphrase"
    assert "k" in info.value.one_line()


def test_unencrypted_key_never_asks_for_a_passphrase(tmp_path: Path) -> None:
    write_new_key(tmp_path / "k", generate_key(), None, "x")

    def refuse(_p: Path) -> bytes:
        raise AssertionError("asked for a passphrase")

    load_private_key(tmp_path / "k", refuse)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    write_new_key(tmp_path / "k", generate_key(), None, "x")
    with pytest.raises(UsageError):
        write_new_key(tmp_path / "k", generate_key(), None, "x")


def test_rsa_key_is_refused(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "rsa", lambda _p: b"")
    assert info.value.code == "key-type"


@pytest.mark.parametrize(
    "content, code",
    [
        (b"", "key-malformed"),
        (b"hello", "key-malformed"),
        (
            b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!!\n-----END OPENSSH PRIVATE KEY-----\n",
            "key-malformed",
        ),
        (b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "key-type"),
    ],
)
def test_garbage_private_keys(tmp_path: Path, content: bytes, code: str) -> None:
    (tmp_path / "k").write_bytes(content)
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "k", lambda _p: b"x")
    assert info.value.code == code


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_private_key(tmp_path / "nope", lambda _p: b"x")
    assert info.value.code == "key-missing"


def test_private_key_given_as_public(tmp_path: Path) -> None:
    write_new_key(tmp_path / "k", generate_key(), None, "x")
    with pytest.raises(KeyFileError) as info:
        load_public_key(tmp_path / "k")
    assert info.value.code == "key-is-private"


@needs_ssh_keygen
def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    public = write_new_key(tmp_path / "k", generate_key(), None, "c")
    out = ssh_keygen("-lf", str(tmp_path / "k.pub")).stdout.decode()
    assert out.split()[1] == public.fingerprint


@needs_ssh_keygen
def test_ssh_keygen_reads_our_encrypted_key(tmp_path: Path) -> None:
    """The format at any number of rounds (1 here, tests/conftest.py); flsilo's 64 are
    checked above, and keys ssh-keygen encrypts at its own 16 load in flsilo (below)."""
    public = write_new_key(tmp_path / "k", generate_key(), b"pw", "c")
    out = ssh_keygen("-y", "-P", "pw", "-f", str(tmp_path / "k"))
    assert out.returncode == 0
    assert out.stdout.decode().split()[1] == public.openssh_line().split()[1]


# ssh-keygen's own 16 bcrypt rounds cost about 0.1 s to write and again to unlock: the
# default tier has it encrypt at 1 round (flsilo reads the rounds from the file), the slow
# tier at its default.
STOCK_PASSPHRASES = [
    ("", []),
    ("stock-pass", ["-a", "1"]),
    pytest.param("stock-pass", [], id="stock-pass-default-rounds", marks=pytest.mark.slow),
]


@needs_ssh_keygen
@pytest.mark.parametrize("passphrase, rounds", STOCK_PASSPHRASES)
def test_stock_ssh_keygen_keys_work(tmp_path: Path, passphrase: str, rounds: list[str]) -> None:
    key = tmp_path / "stock"
    made = ssh_keygen(
        "-q", "-t", "ed25519", "-N", passphrase, *rounds, "-C", "stock", "-f", str(key)
    )
    assert made.returncode == 0
    if passphrase:
        assert kdf_rounds(key) == ("aes256-ctr/bcrypt", int(rounds[1]) if rounds else 16)
    loaded = load_private_key(key, lambda _p: passphrase.encode())
    assert loaded.public_key().public_bytes_raw() == load_public_key(tmp_path / "stock.pub").raw


def test_a_private_key_others_can_read_is_noted_once_and_still_loads(tmp_path: Path) -> None:
    """A key copied through a FAT stick or a zip comes back 0644 or 0755: OpenSSH refuses
    it; flsilo loads it and says how to close it (chmod 600)."""
    from flsilo.runtime import notices
    from tests.conftest import make_key

    path = make_key(tmp_path / "site")
    notices.take()
    keys.load_private_key(path, lambda _p: b"")
    assert notices.take() == []  # written 0600 by keys new
    path.chmod(0o755)
    keys.load_private_key(path, lambda _p: b"")
    keys.load_private_key(path, lambda _p: b"")
    assert notices.take() == [
        f"{path}: the private key is readable by others (mode 0755); run 'chmod 600 {path}' "
        "(a copy through a FAT stick or an archive loses the mode)"
    ]
    spaced = make_key(tmp_path / "my keys" / "site")
    spaced.chmod(0o644)
    keys.load_private_key(spaced, lambda _p: b"")
    assert f"run 'chmod 600 '{spaced}'' (a copy" in notices.take()[0]  # a command to paste
