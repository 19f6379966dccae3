"""``flsilo hub rotate-key``: move the hub to a new key through a statement both keys sign."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from flsilo.format.artifact import scan_file, sig_path
from flsilo.format.manifest import KeyRotation
from flsilo.fs.atomic import copy_file, write_bytes, write_text
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError, VerificationError
from flsilo.signing import oms
from flsilo.signing.keys import (
    PassphraseSource,
    PublicKey,
    load_private_key,
    parse_public_line,
    public_of,
)
from flsilo.signing.rotation import chain_path, dump_chain, make_rotation, pre_rotation_sig_path
from flsilo.signing.sshsig import PACKAGE_NAMESPACE, sign_digest
from hub_kit.events import RotateKey
from hub_kit.workspace import HUB_FILE, HubWorkspace, hub_toml


def rotate_key(
    ws: HubWorkspace, new_key_path: Path, passphrase: PassphraseSource
) -> tuple[str, str, Path]:
    """Rotate the hub key; return the (old, new) fingerprints and the current package.

    The statement (namespace flsilo-root) is logged and carried by every later package, so
    sites follow it from the key they confirmed. The current package is re-signed with the
    new key (its bytes do not change), so new kits verify with the new key alone; its old
    signature stays beside it as ``PACKAGE.pre-rotation-N.sig`` and the statements so far
    as ``PACKAGE.key-chain.json``, for sites that have not received it yet.
    """
    with ws.transaction("rotate-key") as tx:  # lock (bounded wait), log read once
        state = tx.state
        old = load_private_key(ws.key_path, passphrase)
        new = load_private_key(new_key_path, passphrase)
        old_pub, new_pub = public_of(old), public_of(new, comment="flsilo hub")
        if old_pub.blob == new_pub.blob:
            raise UsageError(
                "the new hub key is the current one",
                path=new_key_path,
                code=Code.SAME_KEY,
                hint="make a new key with 'flsilo keys new' first",
            )
        if any(new_pub.blob == k.blob for k in _earlier_keys(state.rotations)):
            raise UsageError(
                "the new hub key was the hub's key before",
                path=new_key_path,
                code=Code.SAME_KEY,
                hint="a retired key is never trusted again (sites refuse a chain back to it): "
                "make a new key with 'flsilo keys new'",
            )
        rotation_seq = len(state.rotations) + 1
        rotation = make_rotation(old, new, ws.config.federation, rotation_seq)
        package = ws.current_package(state)
        scan = scan_file(package)
        if scan.sha256 != state.packages[state.round]:
            raise VerificationError(
                "the current package no longer matches the event log",
                path=package,
                code=Code.PACKAGE_CHANGED,
                hint="restore packages/ from backup, then run 'flsilo audit'",
            )
        digest = scan.digests["sha256"]
        # A site that has not yet received this package trusts the old key only: keep the old
        # signature (stock tools, auditors) and put every statement beside the package, so
        # that site follows the chain to the new key (the package's manifest predates it).
        kept = pre_rotation_sig_path(package, rotation_seq)
        if not kept.exists():  # a rerun after a crash keeps the first copy: the old key's
            copy_file(sig_path(package), kept)
        write_text(chain_path(package), dump_chain([*state.rotations, rotation]))
        write_bytes(sig_path(package), sign_digest(new, PACKAGE_NAMESPACE, digest))
        bundle = oms.bundle_path(package)
        if isinstance(new, ec.EllipticCurvePrivateKey):
            write_bytes(bundle, oms.make_bundle(new, package.name, scan.sha256))
        else:
            bundle.unlink(missing_ok=True)
        event = RotateKey(
            statement=rotation.statement,
            old_signature=rotation.old_signature,
            new_signature=rotation.new_signature,
            hub_key=new_pub.openssh_line(),
            fingerprint=new_pub.fingerprint,
        )
        tx.commit([event], new)
        write_text(
            ws.root / HUB_FILE, hub_toml(new_key_path.resolve(), ws.root, new_pub.fingerprint)
        )
        write_text(ws.root / "hub.pub", new_pub.openssh_line() + "\n")
    return old_pub.fingerprint, new_pub.fingerprint, package


def _earlier_keys(rotations: Sequence[KeyRotation]) -> list[PublicKey]:
    """Every key a rotation so far has retired."""
    return [parse_public_line(json.loads(r.statement)["old_key"]) for r in rotations]
