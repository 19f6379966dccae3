"""OpenSSH Ed25519 keys: generate, write encrypted (bcrypt KDF, 0600), load, fingerprint.

Private keys use OpenSSH's own container (``openssh-key-v1``, aes256-ctr with the bcrypt
KDF), so keys made by ``ssh-keygen -t ed25519`` and keys made here are interchangeable.
Public keys are one ``ssh-ed25519 BASE64 [comment]`` line; fingerprints are OpenSSH's
``SHA256:`` form, identical to ``ssh-keygen -lf``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flsilo.errors import KeyFileError, UsageError
from flsilo.sshwire import WireFormatError, WireReader, pack_string

KEY_TYPE = "ssh-ed25519"
KDF_ROUNDS = 64
"""bcrypt KDF rounds for keys written by flsilo: four times ssh-keygen's default of 16.

About 0.5 s per unlock on one core of the 2-core reference machine, paid once per key per
command (see :data:`_UNLOCKED`); each guess at a stolen key file costs an attacker the same.
docs/explanation/threat-model.md explains the choice.
"""

_UNLOCKED: dict[tuple[bytes, bytes], Ed25519PrivateKey] = {}
"""Keys already unlocked in this process, by (sha256 of the key file, sha256 of the passphrase).

A long command (``flsilo demo``, a library caller running many rounds) unlocks each key file
once; the same bytes with the same passphrase always give the same key, so nothing is
trusted that a fresh unlock would refuse.
"""

PassphraseSource = Callable[[Path], bytes]
"""Called with the key's path when, and only when, the key is encrypted."""


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key in OpenSSH form, with its optional comment."""

    blob: bytes
    comment: str = ""

    @property
    def raw(self) -> bytes:
        reader = WireReader(self.blob)
        reader.text()
        return reader.string()

    @property
    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_blob(self.blob)

    def openssh_line(self) -> str:
        b64 = base64.b64encode(self.blob).decode("ascii")
        return f"{KEY_TYPE} {b64} {self.comment}".rstrip()

    @classmethod
    def from_key(cls, key: Ed25519PublicKey, comment: str = "") -> PublicKey:
        raw = key.public_bytes_raw()
        return cls(blob=pack_string(KEY_TYPE.encode()) + pack_string(raw), comment=comment)


def fingerprint_of_blob(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint_matches(confirmed: str, actual: str) -> bool:
    """Whether a fingerprint a person typed (``SHA256:`` prefix optional) is ``actual``."""
    text = confirmed.strip()
    if not text.startswith("SHA256:"):
        text = "SHA256:" + text
    return hmac.compare_digest(text.encode(), actual.encode())


def parse_public_blob(blob: bytes, *, source: str = "key") -> PublicKey:
    """Check an SSH public key blob is a well-formed Ed25519 key."""
    try:
        reader = WireReader(blob)
        key_type = reader.text()
        raw = reader.string()
        reader.done()
    except WireFormatError as exc:
        raise KeyFileError(
            f"public key is malformed ({exc})",
            path=source,
            code="key-malformed",
            hint="use the .pub file written by 'flsilo keys new' or 'ssh-keygen -t ed25519'",
        ) from exc
    if key_type != KEY_TYPE:
        raise KeyFileError(
            f"key type {key_type!r} is not supported; flsilo uses Ed25519 keys only",
            path=source,
            code="key-type",
            hint="make a key with 'flsilo keys new' or 'ssh-keygen -t ed25519'",
        )
    if len(raw) != 32:
        raise KeyFileError("Ed25519 public key is not 32 bytes", path=source, code="key-malformed")
    return PublicKey(blob=blob)


def parse_public_line(line: str, *, source: str = "key") -> PublicKey:
    """Parse ``ssh-ed25519 BASE64 [comment]``."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise KeyFileError(
            "not an OpenSSH public key line",
            path=source,
            code="key-malformed",
            hint="expected 'ssh-ed25519 AAAA... comment', as in a .pub file",
        )
    if parts[0] != KEY_TYPE:
        raise KeyFileError(
            f"key type {parts[0]!r} is not supported; flsilo uses Ed25519 keys only",
            path=source,
            code="key-type",
            hint="make a key with 'flsilo keys new' or 'ssh-keygen -t ed25519'",
        )
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise KeyFileError(
            "public key is not valid base64", path=source, code="key-malformed"
        ) from exc
    key = parse_public_blob(blob, source=source)
    return PublicKey(blob=key.blob, comment=parts[2] if len(parts) > 2 else "")


def load_public_key(path: Path) -> PublicKey:
    """Read a ``.pub`` file (or the public half next to a private key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyFileError(
            "public key file not found",
            path=path,
            code="key-missing",
            hint="check the path; public keys end in .pub",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read public key ({exc})", path=path) from exc
    if "PRIVATE KEY" in text:
        raise KeyFileError(
            "this is a private key; give the public key",
            path=path,
            code="key-is-private",
            hint=f"use {path}.pub — never copy a private key off its machine",
        )
    return parse_public_line(text, source=str(path))


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_bytes(key: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    """Serialize in OpenSSH format, encrypted with aes256-ctr + bcrypt KDF when a passphrase is set."""
    from cryptography.hazmat.primitives import (
        serialization,  # private keys only: off the verify path
    )

    if passphrase:
        encryption: serialization.KeySerializationEncryption = (
            serialization.PrivateFormat.OpenSSH.encryption_builder()
            .kdf_rounds(KDF_ROUNDS)
            .build(passphrase)
        )
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )


def write_new_key(
    path: Path, key: Ed25519PrivateKey, passphrase: bytes | None, comment: str
) -> PublicKey:
    """Write PATH (0600, never overwriting) and PATH.pub; return the public key."""
    pub_path = path.with_name(path.name + ".pub")
    for target in (path, pub_path):
        if target.exists():
            raise UsageError(
                "refusing to overwrite an existing key file",
                path=target,
                code="key-exists",
                hint="choose another path, or move the old key away first",
            )
    public = PublicKey.from_key(key.public_key(), comment=comment)
    data = private_key_bytes(key, passphrase)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, 0o600)
        pub_path.write_text(public.openssh_line() + "\n", encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"cannot write key ({exc.strerror})", path=path) from exc
    return public


def is_encrypted(data: bytes, path: Path) -> bool:
    """Whether an OpenSSH private key file needs a passphrase."""
    lines = data.decode("ascii", errors="replace").strip().splitlines()
    if not lines or lines[0].strip() != "-----BEGIN OPENSSH PRIVATE KEY-----":
        if lines and "PRIVATE KEY" in lines[0]:
            raise KeyFileError(
                f"{lines[0].strip(' -')} is not an OpenSSH Ed25519 key",
                path=path,
                code="key-type",
                hint="make a key with 'flsilo keys new' or 'ssh-keygen -t ed25519'",
            )
        raise KeyFileError(
            "not an OpenSSH private key",
            path=path,
            code="key-malformed",
            hint="give the private key file written by 'flsilo keys new' or 'ssh-keygen'",
        )
    body = "".join(line.strip() for line in lines[1:] if not line.startswith("-----"))
    try:
        blob = base64.b64decode(body, validate=True)
        magic = b"openssh-key-v1\x00"
        if not blob.startswith(magic):
            raise WireFormatError("bad magic")
        cipher = WireReader(blob[len(magic) :]).text()
    except (binascii.Error, WireFormatError) as exc:
        raise KeyFileError("private key file is corrupt", path=path, code="key-malformed") from exc
    return cipher != "none"


def load_private_key(path: Path, passphrase: PassphraseSource) -> Ed25519PrivateKey:
    """Load an OpenSSH Ed25519 private key, asking for the passphrase only if it is encrypted."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(
            "private key file not found",
            path=path,
            code="key-missing",
            hint="check the path, or make one with 'flsilo keys new PATH'",
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read private key ({exc.strerror})", path=path) from exc
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    password = passphrase(path) if is_encrypted(data, path) else None
    memo = (hashlib.sha256(data).digest(), hashlib.sha256(password or b"").digest())
    if memo in _UNLOCKED:
        return _UNLOCKED[memo]
    try:
        key = serialization.load_ssh_private_key(data, password=password)
    except ValueError as exc:
        if password is not None:
            raise KeyFileError(
                "wrong passphrase for this key",
                path=path,
                code="key-passphrase",
                hint="check FLSILO_PASSPHRASE or --passphrase-file",
            ) from exc
        raise KeyFileError(
            f"private key cannot be loaded ({exc})", path=path, code="key-malformed"
        ) from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"private key cannot be loaded ({exc})", path=path, code="key-malformed"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{type(key).__name__.replace('_', '')} keys are not supported; flsilo uses Ed25519",
            path=path,
            code="key-type",
            hint="make a key with 'flsilo keys new' or 'ssh-keygen -t ed25519'",
        )
    if password is not None:
        _UNLOCKED[memo] = key
    return key
