"""SSHSIG detached signatures (OpenSSH PROTOCOL.sshsig) with Ed25519 or ECDSA P-256, in-process.

The signature covers ``H(message)``; callers hash the file once while streaming it and pass
the digest here, so these functions do no I/O. The armored form is byte-for-byte what
``ssh-keygen -Y sign`` writes, and parsing is strict: any other encoding of the same blob is
refused, so any change to a ``.sig`` file is detected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import KeyFileError, MalformedInputError, VerificationError
from flsilo.signing.keys import PrivateKey, PublicKey, parse_public_blob, public_of, sign_ssh
from flsilo.signing.sshwire import WireFormatError, WireReader, pack_string, pack_uint32

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
HASH_ALGORITHMS = ("sha256", "sha512")
BUNDLE_NAMESPACE = "flsilo-bundle"
PACKAGE_NAMESPACE = "flsilo-package"
RELEASE_NAMESPACE = "flsilo-release"
LOG_NAMESPACE = "flsilo-log"
ROOT_NAMESPACE = "flsilo-root"
EVAL_NAMESPACE = "flsilo-eval"


@dataclass(frozen=True)
class Signature:
    """A parsed SSHSIG blob."""

    public_key: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes
    reserved: bytes = b""
    signature_type: str = "ssh-ed25519"

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint


def new_hash(algorithm: str) -> hashlib._Hash:
    if algorithm not in HASH_ALGORITHMS:
        raise ValueError(algorithm)
    return hashlib.new(algorithm)


def signed_data(namespace: str, hash_algorithm: str, digest: bytes, reserved: bytes = b"") -> bytes:
    """The exact bytes an SSHSIG signature is made over."""
    return (
        MAGIC
        + pack_string(namespace.encode())
        + pack_string(reserved)
        + pack_string(hash_algorithm.encode())
        + pack_string(digest)
    )


def armor(blob: bytes) -> bytes:
    """PEM-style armor exactly as ssh-keygen writes it: 70 base64 columns, LF line ends."""
    b64 = base64.b64encode(blob).decode("ascii")
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return ("\n".join([BEGIN, *lines, END]) + "\n").encode("ascii")


def sign_digest(
    key: PrivateKey, namespace: str, digest: bytes, hash_algorithm: str = "sha256"
) -> bytes:
    """Return the armored ``.sig`` contents for a message whose hash is ``digest``."""
    public = public_of(key)
    sig_blob = sign_ssh(key, signed_data(namespace, hash_algorithm, digest))
    blob = (
        MAGIC
        + pack_uint32(VERSION)
        + pack_string(public.blob)
        + pack_string(namespace.encode())
        + pack_string(b"")
        + pack_string(hash_algorithm.encode())
        + pack_string(sig_blob)
    )
    return armor(blob)


def _malformed(source: str, why: str) -> MalformedInputError:
    return MalformedInputError(
        f"signature file is malformed ({why})",
        path=source,
        code=Code.SIGNATURE_MALFORMED,
        hint="the .sig file was damaged or is not an SSH signature; get a fresh copy from "
        "whoever signed it",
    )


def parse_signature(data: bytes, *, source: str = "signature") -> Signature:
    """Parse an armored SSHSIG file strictly (canonical armor only)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise _malformed(source, "not ASCII text") from exc
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != "" or lines[-2] != END:
        raise _malformed(source, "missing SSH SIGNATURE armor")
    try:
        blob = base64.b64decode("".join(lines[1:-2]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed(source, "bad base64") from exc
    if armor(blob) != data:
        raise _malformed(source, "armor is not in canonical form")
    try:
        reader = WireReader(blob)
        if reader.raw(6) != MAGIC:
            raise WireFormatError("not an SSHSIG blob")
        version = reader.uint32()
        if version != VERSION:
            raise WireFormatError(f"unsupported SSHSIG version {version}")
        key_blob = reader.string()
        namespace = reader.string().decode("utf-8")
        reserved = reader.string()
        hash_algorithm = reader.text()
        sig_reader = WireReader(reader.string())
        reader.done()
        sig_type = sig_reader.text()
        raw_sig = sig_reader.string()
        sig_reader.done()
    except (WireFormatError, UnicodeDecodeError) as exc:
        raise _malformed(source, str(exc)) from exc
    if hash_algorithm not in HASH_ALGORITHMS:
        raise _malformed(source, f"unsupported hash algorithm {hash_algorithm!r}")
    try:
        public = parse_public_blob(key_blob, source=source)
    except KeyFileError as exc:
        raise _malformed(source, f"embedded public key: {exc.message}") from exc
    if sig_type != public.key_type or (sig_type == "ssh-ed25519" and len(raw_sig) != 64):
        raise _malformed(source, f"unsupported signature type {sig_type!r}")
    return Signature(
        public_key=public,
        namespace=namespace,
        hash_algorithm=hash_algorithm,
        signature=raw_sig,
        reserved=reserved,
        signature_type=sig_type,
    )


def check_signature(sig: Signature, namespace: str, digest: bytes, *, source: str) -> None:
    """Check the namespace and the cryptographic signature over ``digest``.

    Trust in the key (which principal it belongs to) is a separate step: see flsilo.signing.trust.
    """
    if sig.namespace != namespace:
        raise VerificationError(
            f"signature is in namespace {sig.namespace!r}, expected {namespace!r}",
            path=source,
            code=Code.WRONG_NAMESPACE,
            hint="a bundle signature cannot stand for a package and vice versa; "
            "get the right .sig for this file",
        )
    data = signed_data(namespace, sig.hash_algorithm, digest, sig.reserved)
    if not sig.public_key.verify(sig.signature_type, sig.signature, data):
        raise VerificationError(
            "signature does not match the file: the file or its .sig was changed, or they "
            "belong to different files",
            path=source,
            code=Code.BAD_SIGNATURE,
            hint="do not use this file; ask the signer for a fresh copy of both files",
        )
