"""OpenSSF model signing (OMS v1) bundles for P-256-signed packages, written by flsilo itself.

The bundle is a sigstore bundle (v0.3 JSON) holding a DSSE envelope around an in-toto
Statement v1 whose predicate lists the file digests, as ``model_signing sign key`` writes
for a single file. flsilo signs it with the hub's own key, so the private key never leaves
flsilo's key handling; ``model_signing verify key PACKAGE --signature PACKAGE.sigstore.json
--public_key hub.pem`` accepts it offline. Verification here is pure: bytes in, verdict out.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, VerificationError
from flsilo.signing.keys import PublicKey

BUNDLE_SUFFIX = ".sigstore.json"
MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
MAX_BUNDLE_BYTES = 1 << 20
SERIALIZATION = {
    "method": "files",
    "hash_type": "sha256",
    "allow_symlinks": False,
    "ignore_paths": [".gitattributes", ".github", ".git", ".gitignore"],
}


def bundle_path(path: Path) -> Path:
    return path.with_name(path.name + BUNDLE_SUFFIX)


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that are signed."""
    return b"DSSEv1 %d %s %d %s" % (
        len(PAYLOAD_TYPE),
        PAYLOAD_TYPE.encode(),
        len(payload),
        payload,
    )


def statement(name: str, sha256_hex: str) -> bytes:
    """The in-toto statement for one file: resource ``.``, subject digest over its digest."""
    root = hashlib.sha256(bytes.fromhex(sha256_hex)).hexdigest()
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": [{"name": ".", "algorithm": "sha256", "digest": sha256_hex}],
            "serialization": SERIALIZATION,
        },
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def key_hint(public: PublicKey) -> str:
    return hashlib.sha256(public.pem()).hexdigest()


def make_bundle(key: ec.EllipticCurvePrivateKey, name: str, sha256_hex: str) -> bytes:
    """The bundle for file ``name`` with sha256 ``sha256_hex``, signed by a P-256 key."""
    payload = statement(name, sha256_hex)
    signature = key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
    bundle = {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(PublicKey.from_key(key.public_key()))},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode()


def _malformed(source: str, why: str) -> MalformedInputError:
    return MalformedInputError(
        f"model signing bundle is malformed ({why})",
        path=source,
        code=Code.OMS_MALFORMED,
        hint="get a fresh PACKAGE.sigstore.json from the hub",
    )


def _envelope(data: bytes, source: str) -> tuple[bytes, bytes]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise _malformed(source, "larger than 1 MiB")
    try:
        bundle = json.loads(data)
        envelope = bundle["dsseEnvelope"]
        if bundle["mediaType"] != MEDIA_TYPE or envelope["payloadType"] != PAYLOAD_TYPE:
            raise ValueError("unexpected media or payload type")
        (sig,) = envelope["signatures"]
        return (
            base64.b64decode(envelope["payload"], validate=True),
            base64.b64decode(sig["sig"], validate=True),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise _malformed(source, str(exc)) from exc


def verify_bundle(
    data: bytes, public: PublicKey, name: str, sha256_hex: str, *, source: str
) -> None:
    """Check the bundle's signature by ``public`` and that it states ``sha256_hex`` for the file."""
    payload, signature = _envelope(data, source)
    key = public.key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError(
            "model signing bundles are made only with ECDSA P-256 hub keys",
            path=source,
            code=Code.OMS_KEY_TYPE,
            hint="this hub key is Ed25519; verify the package's .sig instead",
        )
    try:
        key.verify(signature, pae(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VerificationError(
            "model signing bundle is not signed by the hub key",
            path=source,
            code=Code.OMS_BAD_SIGNATURE,
            hint="do not use this package; get fresh copies of it and its bundle",
        ) from exc
    if payload != statement(name, sha256_hex):
        raise VerificationError(
            "model signing bundle states another file or digest",
            path=source,
            code=Code.OMS_MISMATCH,
            hint="the bundle belongs to another package; keep each package with its own files",
        )
