"""Hub key rotation statements (namespace ``flsilo-root``): make one, follow a chain of them.

In the manner of TUF's root rotation: a statement names the federation, the rotation's
number, the old and the new hub key, and is signed by both keys. Packages carry every
statement so far; a site that confirmed one hub key by phone accepts a later key only
through an unbroken chain of such statements starting at the key it confirmed. Pure: bytes
and keys in, a key or an error out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from flsilo.format.manifest import KeyRotation
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, VerificationError
from flsilo.signing.keys import PrivateKey, PublicKey, parse_public_line, public_of
from flsilo.signing.sshsig import ROOT_NAMESPACE, check_signature, parse_signature, sign_digest

STATEMENT_TYPE = "flsilo-root-rotation/1"
MAX_CHAIN_BYTES = 1 << 20
"""A key chain file holds a few statements of about 1 KiB each; anything above is refused."""


def chain_path(package: Path) -> Path:
    """``PACKAGE.key-chain.json``: the statements so far, beside a package re-signed at a
    rotation (that package's own manifest predates the rotation, so it cannot carry it)."""
    return package.with_name(f"{package.name}.key-chain.json")


def pre_rotation_sig_path(package: Path, seq: int) -> Path:
    """``PACKAGE.pre-rotation-N.sig``: the package's signature by the key rotation N retired."""
    return package.with_name(f"{package.name}.pre-rotation-{seq}.sig")


def dump_chain(chain: tuple[KeyRotation, ...] | list[KeyRotation]) -> str:
    """The JSON of a key chain file (and a kit's ``key-chain.json``)."""
    rows = [
        {
            "statement": r.statement,
            "old_signature": r.old_signature,
            "new_signature": r.new_signature,
        }
        for r in chain
    ]
    return json.dumps(rows, indent=1) + "\n"


def load_chain(data: bytes, *, source: str) -> tuple[KeyRotation, ...]:
    """Parse a key chain file; the statements themselves are checked by :func:`follow_chain`."""
    try:
        rows = json.loads(data.decode("utf-8"))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("not a list of statements")
        return tuple(
            KeyRotation(str(r["statement"]), str(r["old_signature"]), str(r["new_signature"]))
            for r in rows
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # nesting: RecursionError
        raise _broken(source, f"unreadable key chain ({exc})") from exc


def make_rotation(old: PrivateKey, new: PrivateKey, federation: str, seq: int) -> KeyRotation:
    """A statement that the hub key of ``federation`` moves from ``old`` to ``new``."""
    body = {
        "type": STATEMENT_TYPE,
        "federation": federation,
        "seq": seq,
        "old_key": public_of(old).openssh_line(),
        "new_key": public_of(new).openssh_line(),
    }
    statement = json.dumps(body, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(statement.encode()).digest()
    return KeyRotation(
        statement=statement,
        old_signature=sign_digest(old, ROOT_NAMESPACE, digest).decode("ascii"),
        new_signature=sign_digest(new, ROOT_NAMESPACE, digest).decode("ascii"),
    )


def _broken(source: str, why: str) -> VerificationError:
    return VerificationError(
        f"hub key rotation chain is broken: {why}",
        path=source,
        code=Code.ROTATION_BROKEN,
        hint="do not trust this package; call the hub and confirm its current key fingerprint",
    )


def rotation_keys(
    rotation: KeyRotation, federation: str, seq: int, *, source: str
) -> tuple[PublicKey, PublicKey]:
    """Check one statement (both signatures, federation, its place ``seq`` in the chain) and
    return its (old, new) keys."""
    try:
        body = json.loads(rotation.statement)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("old_key", "new_key")
        ):
            raise ValueError("not a rotation statement")
        if body.get("type") != STATEMENT_TYPE or body.get("federation") != federation:
            raise ValueError("statement is for another federation or of another type")
        if body.get("seq") != seq:
            raise ValueError(f"statement {body.get('seq')!r} stands at place {seq} of the chain")
        old = parse_public_line(body["old_key"])
        new = parse_public_line(body["new_key"])
        digest = hashlib.sha256(rotation.statement.encode()).digest()
        for key, armored in ((old, rotation.old_signature), (new, rotation.new_signature)):
            sig = parse_signature(armored.encode("ascii"), source=source)
            if sig.public_key.blob != key.blob:
                raise ValueError("a statement signature is not by the key it names")
            check_signature(sig, ROOT_NAMESPACE, digest, source=source)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # nesting: RecursionError
        raise _broken(source, str(exc)) from exc
    except FlsiloError as exc:
        raise _broken(source, exc.message) from exc
    return old, new


def follow_chain(
    trusted: PublicKey,
    chain: tuple[KeyRotation, ...],
    federation: str,
    *,
    source: str,
    retired: Iterable[PublicKey] = (),
) -> PublicKey:
    """The newest hub key reachable from ``trusted`` through ``chain`` (``trusted`` if none);
    see :func:`walk_chain`."""
    return walk_chain(trusted, chain, federation, source=source, retired=retired)[-1]


def walk_chain(
    trusted: PublicKey,
    chain: tuple[KeyRotation, ...],
    federation: str,
    *,
    source: str,
    retired: Iterable[PublicKey] = (),
) -> list[PublicKey]:
    """Every hub key from ``trusted`` to the newest one ``chain`` reaches, in order.

    The chain is the hub's whole history, statement N at place N (so none is left out at the
    start, reordered or spliced in), and never returns to a key it left: the hub refuses to
    rotate back to an earlier key, so an old statement replayed cannot lead back to it.
    ``retired`` are the keys the follower itself trusted and left before ``trusted`` (a site
    remembers every one): a chain back to any of them is refused too, even one whose
    statements both keys signed, so the rule holds across the whole history and not only
    within one walk of the chain.
    """
    walked = [trusted]
    left: set[bytes] = {k.blob for k in retired if k.blob != trusted.blob}
    for seq, rotation in enumerate(chain, start=1):
        old, new = rotation_keys(rotation, federation, seq, source=source)
        current = walked[-1]
        if old.blob == current.blob:
            if new.blob in left or new.blob == current.blob:
                raise _broken(source, "a statement leads back to a hub key already left")
            left.add(current.blob)
            walked.append(new)
        elif len(walked) > 1:
            raise _broken(source, "a statement does not start at the key before it")
    return walked
