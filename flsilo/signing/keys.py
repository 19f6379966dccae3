"""OpenSSH keys (Ed25519, ECDSA P-256): generate, write encrypted (bcrypt KDF, 0600), load, sign.

Private keys use OpenSSH's own container (``openssh-key-v1``, aes256-ctr with the bcrypt
KDF), so keys made by ``ssh-keygen -t ed25519`` or ``ssh-keygen -t ecdsa`` (P-256) and keys
made here are interchangeable. Public keys are one ``ssh-ed25519 BASE64 [comment]`` or
``ecdsa-sha2-nistp256 BASE64 [comment]`` line; fingerprints are OpenSSH's ``SHA256:`` form,
identical to ``ssh-keygen -lf``. Ed25519 is the default; P-256 is there for a FIPS-approved
curve and for OpenSSF model signing bundles.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import shlex
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from flsilo.fs.untrusted import read_bounded
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import KeyFileError, MalformedInputError, UsageError
from flsilo.runtime.notices import notice
from flsilo.signing.sshwire import WireFormatError, WireReader, pack_mpint, pack_string

MAX_PUBLIC_KEY_BYTES = 64 * 1024
"""A public key file is one line of well under 1 KiB."""

ED25519 = "ssh-ed25519"
ECDSA_P256 = "ecdsa-sha2-nistp256"
KEY_TYPE = ED25519
"""The default key type."""
KEY_TYPES = (ED25519, ECDSA_P256)
TYPE_NAMES = {"ed25519": ED25519, "ecdsa-p256": ECDSA_P256}
"""``flsilo keys new --type`` names and the OpenSSH key types they make."""
P256_CURVE = b"nistp256"
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
"""A private key flsilo signs with: Ed25519, or ECDSA on P-256 (checked when loaded)."""
KDF_ROUNDS = 64
"""bcrypt KDF rounds for keys written by flsilo: four times ssh-keygen's default of 16.

About 0.5 s per unlock on one core of the 2-core reference machine, paid once per key per
command (see :data:`_UNLOCKED`); each guess at a stolen key file costs an attacker the same.
docs/explanation/threat-model.md explains the choice.
"""

_UNLOCKED: dict[tuple[bytes, bytes], PrivateKey] = {}
"""Keys already loaded in this process, by (sha256 of the key file, sha256 of the passphrase;
of nothing for a key without one).

A long command (``flsilo demo``, a library caller running many rounds) unlocks each key file
once, and loads an unencrypted one once (loading derives the public key, which costs more
than reading the file); the same bytes with the same passphrase always give the same key,
so nothing is trusted that a fresh load would refuse. A key is kept only once it passed
every check below.
"""
_VERIFIED: set[tuple[bytes, str, bytes, bytes]] = set()
"""Signatures this process found good: (key blob, signature type, signature, signed bytes).

A command checks the same signature more than once (a package at intake, in the round, in
the audit; the log's signature on every read); the answer is a function of these bytes
alone, so a signature over any other bytes, by any other key, is checked afresh. A bad
signature is never kept."""
_VERIFIED_MAX = 4096

SUPPORTED_HINT = "make a key with 'flsilo keys new' or 'ssh-keygen -t ed25519' (or -t ecdsa)"

PassphraseSource = Callable[[Path], bytes]
"""Called with the key's path when, and only when, the key is encrypted."""


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 or ECDSA P-256 public key in OpenSSH form, with its optional comment."""

    blob: bytes
    comment: str = ""

    @property
    def key_type(self) -> str:
        return WireReader(self.blob).text()

    @property
    def raw(self) -> bytes:
        """The key's point: 32 bytes (Ed25519) or the 65-byte uncompressed P-256 point."""
        reader = WireReader(self.blob)
        if reader.text() == ECDSA_P256:
            reader.string()
        return reader.string()

    @property
    def key(self) -> Ed25519PublicKey | ec.EllipticCurvePublicKey:
        if self.key_type == ECDSA_P256:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
        return Ed25519PublicKey.from_public_bytes(self.raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_blob(self.blob)

    def openssh_line(self) -> str:
        b64 = base64.b64encode(self.blob).decode("ascii")
        return f"{self.key_type} {b64} {self.comment}".rstrip()

    def pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, as ``ssh-keygen -e -m PKCS8`` writes it."""
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, sig_type: str, raw_sig: bytes, data: bytes) -> bool:
        """Check an SSH signature blob's parts over ``data``; False when it does not verify."""
        if sig_type != self.key_type:
            return False
        checked = (self.blob, sig_type, bytes(raw_sig), bytes(data))
        if checked in _VERIFIED:
            return True
        try:
            key = self.key
            if isinstance(key, ec.EllipticCurvePublicKey):
                reader = WireReader(raw_sig)
                r, s = reader.mpint(), reader.mpint()
                reader.done()
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
            else:
                key.verify(raw_sig, data)
        except (InvalidSignature, WireFormatError, ValueError):
            return False
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED.add(checked)
        return True

    @classmethod
    def from_key(
        cls, key: Ed25519PublicKey | ec.EllipticCurvePublicKey, comment: str = ""
    ) -> PublicKey:
        if isinstance(key, ec.EllipticCurvePublicKey):
            from cryptography.hazmat.primitives import serialization

            point = key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            blob = pack_string(ECDSA_P256.encode()) + pack_string(P256_CURVE) + pack_string(point)
            return cls(blob=blob, comment=comment)
        raw = key.public_bytes_raw()
        return cls(blob=pack_string(ED25519.encode()) + pack_string(raw), comment=comment)


def sign_ssh(key: PrivateKey, data: bytes) -> bytes:
    """An SSH signature blob (``string type, string signature``) over ``data``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return pack_string(ECDSA_P256.encode()) + pack_string(pack_mpint(r) + pack_mpint(s))
    return pack_string(ED25519.encode()) + pack_string(key.sign(data))


def public_of(key: PrivateKey, comment: str = "") -> PublicKey:
    return PublicKey.from_key(key.public_key(), comment=comment)


def fingerprint_of_blob(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def fingerprint_matches(confirmed: str, actual: str) -> bool:
    """Whether a fingerprint a person typed (``SHA256:`` prefix optional) is ``actual``."""
    text = confirmed.strip()
    if not text.startswith("SHA256:"):
        text = "SHA256:" + text
    return hmac.compare_digest(text.encode(), actual.encode())


def _unsupported(key_type: str, source: str) -> KeyFileError:
    return KeyFileError(
        f"key type {key_type!r} is not supported; flsilo uses Ed25519 or ECDSA P-256 keys",
        path=source,
        code=Code.KEY_TYPE,
        hint=SUPPORTED_HINT,
    )


def parse_public_blob(blob: bytes, *, source: str = "key") -> PublicKey:
    """Check an SSH public key blob is a well-formed Ed25519 or P-256 key."""
    try:
        reader = WireReader(blob)
        key_type = reader.text()
        if key_type not in KEY_TYPES:
            raise _unsupported(key_type, source)
        curve = reader.string() if key_type == ECDSA_P256 else None
        raw = reader.string()
        reader.done()
    except WireFormatError as exc:
        raise KeyFileError(
            f"public key is malformed ({exc})",
            path=source,
            code=Code.KEY_MALFORMED,
            hint="use the .pub file written by 'flsilo keys new' or 'ssh-keygen'",
        ) from exc
    if key_type == ED25519 and len(raw) != 32:
        raise KeyFileError(
            "Ed25519 public key is not 32 bytes", path=source, code=Code.KEY_MALFORMED
        )
    if key_type == ECDSA_P256:
        if curve != P256_CURVE:
            raise KeyFileError(
                "ECDSA key is not on the nistp256 curve", path=source, code=Code.KEY_MALFORMED
            )
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError as exc:
            raise KeyFileError(
                "ECDSA P-256 public key is not a point on the curve",
                path=source,
                code=Code.KEY_MALFORMED,
            ) from exc
    return PublicKey(blob=blob)


def parse_public_line(line: str, *, source: str = "key") -> PublicKey:
    """Parse ``ssh-ed25519 BASE64 [comment]`` or ``ecdsa-sha2-nistp256 BASE64 [comment]``."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise KeyFileError(
            "not an OpenSSH public key line",
            path=source,
            code=Code.KEY_MALFORMED,
            hint="expected 'ssh-ed25519 AAAA... comment', as in a .pub file",
        )
    if parts[0] not in KEY_TYPES:
        raise _unsupported(parts[0], source)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise KeyFileError(
            "public key is not valid base64", path=source, code=Code.KEY_MALFORMED
        ) from exc
    key = parse_public_blob(blob, source=source)
    if key.key_type != parts[0]:
        raise KeyFileError(
            f"line says {parts[0]!r} but holds a {key.key_type!r} key",
            path=source,
            code=Code.KEY_MALFORMED,
        )
    return PublicKey(blob=key.blob, comment=parts[2] if len(parts) > 2 else "")


def load_public_key(path: Path) -> PublicKey:
    """Read a ``.pub`` file (or the public half next to a private key)."""
    try:
        text = read_bounded(path, MAX_PUBLIC_KEY_BYTES, follow=True).decode("utf-8")
    except MalformedInputError as exc:
        if exc.code == Code.MISSING:
            raise KeyFileError(
                "public key file not found",
                path=path,
                code=Code.KEY_MISSING,
                hint="check the path; public keys end in .pub",
            ) from exc
        raise
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"cannot read public key ({exc})", path=path) from exc
    if "PRIVATE KEY" in text:
        raise KeyFileError(
            "this is a private key; give the public key",
            path=path,
            code=Code.KEY_IS_PRIVATE,
            hint=f"use {path}.pub — never copy a private key off its machine",
        )
    return parse_public_line(text, source=str(path))


def generate_key(key_type: str = "ed25519") -> PrivateKey:
    """A new private key; ``key_type`` is ``ed25519`` (default) or ``ecdsa-p256``."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type != "ed25519":
        raise UsageError(
            f"unknown key type {key_type!r}",
            code=Code.BAD_KEY_TYPE,
            hint="use --type ed25519 (default) or --type ecdsa-p256",
        )
    return Ed25519PrivateKey.generate()


def private_key_bytes(key: PrivateKey, passphrase: bytes | None) -> bytes:
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


def write_new_key(path: Path, key: PrivateKey, passphrase: bytes | None, comment: str) -> PublicKey:
    """Write PATH (0600, never overwriting) and PATH.pub; return the public key."""
    pub_path = path.with_name(path.name + ".pub")
    for target in (path, pub_path):
        if target.exists():
            raise UsageError(
                "refusing to overwrite an existing key file",
                path=target,
                code=Code.KEY_EXISTS,
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
                f"{lines[0].strip(' -')} is not an OpenSSH key",
                path=path,
                code=Code.KEY_TYPE,
                hint=SUPPORTED_HINT,
            )
        raise KeyFileError(
            "not an OpenSSH private key",
            path=path,
            code=Code.KEY_MALFORMED,
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
        raise KeyFileError(
            "private key file is corrupt", path=path, code=Code.KEY_MALFORMED
        ) from exc
    return cipher != "none"


PROMPT_ATTEMPTS = 3
"""Passphrases asked at an interactive prompt before a wrong one is final."""


def _note_open_mode(path: Path) -> None:
    """A note (not a refusal) for a private key others may read: OpenSSH refuses one, and a
    copy through a FAT stick or a zip archive drops the 0600 that ``keys new`` wrote."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077 and os.name == "posix":
        notice(
            f"{path}: the private key is readable by others (mode {mode:04o}); "
            f"run 'chmod 600 {shlex.quote(str(path))}' (a copy through a FAT stick or an archive loses the mode)"
        )


def _read_private_key_file(path: Path) -> bytes:
    """The bytes of a private key file, with a message of its own for each usual mix-up."""
    if path.is_dir():
        raise KeyFileError(
            "a directory was given where a private key file is expected",
            path=path,
            code=Code.KEY_MISSING,
            hint="give the key file itself (e.g. keys/hub), not the folder that holds it",
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        pub = path.with_name(path.name + ".pub")
        raise KeyFileError(
            "private key file not found",
            path=path,
            code=Code.KEY_MISSING,
            hint="check the path, or make one with 'flsilo keys new PATH'"
            if not pub.exists()
            else f"only {pub.name} is here: the private key stays on the machine that made it",
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read private key ({exc.strerror})", path=path) from exc
    if data.lstrip().startswith((b"ssh-ed25519 ", b"ecdsa-sha2-", b"ssh-rsa ")):
        raise KeyFileError(
            "this is a public key (.pub); signing needs the private key",
            path=path,
            code=Code.KEY_MALFORMED,
            hint=f"give the private key file (the same name without .pub: "
            f"{path.name.removesuffix('.pub')})",
        )
    return data


def load_private_key(path: Path, passphrase: PassphraseSource) -> PrivateKey:
    """Load an OpenSSH Ed25519 or ECDSA P-256 private key, asking for the passphrase only if it is encrypted."""
    data = _read_private_key_file(path)
    _note_open_mode(path)
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    encrypted = is_encrypted(data, path)
    attempt = 0
    while True:
        attempt += 1
        password = passphrase(path) if encrypted else None
        memo = (hashlib.sha256(data).digest(), hashlib.sha256(password or b"").digest())
        if memo in _UNLOCKED:
            return _UNLOCKED[memo]
        try:
            key = serialization.load_ssh_private_key(data, password=password)
            break
        except ValueError as exc:
            if password is None:
                raise KeyFileError(
                    f"private key cannot be loaded ({exc})", path=path, code=Code.KEY_MALFORMED
                ) from exc
            # A person typing at a prompt gets PROMPT_ATTEMPTS tries, as ssh and sudo give.
            if getattr(passphrase, "may_ask_again", False) and attempt < PROMPT_ATTEMPTS:
                continue
            raise KeyFileError(
                "wrong passphrase for this key",
                path=path,
                code=Code.KEY_PASSPHRASE,
                hint=getattr(passphrase, "wrong_hint", None)
                or "check the passphrase given for this key",
            ) from exc
        except (TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(
                f"private key cannot be loaded ({exc})", path=path, code=Code.KEY_MALFORMED
            ) from exc
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(
            f"ECDSA {key.curve.name} keys are not supported; flsilo uses Ed25519 or ECDSA P-256",
            path=path,
            code=Code.KEY_TYPE,
            hint=SUPPORTED_HINT,
        )
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileError(
            f"{type(key).__name__.replace('_', '')} keys are not supported; flsilo uses "
            "Ed25519 or ECDSA P-256",
            path=path,
            code=Code.KEY_TYPE,
            hint=SUPPORTED_HINT,
        )
    _UNLOCKED[memo] = key
    return key
