"""The anchored event log: the hub's signature over its log (``flsilo-log``) and ``--against``.

The hub signs the whole of ``events.jsonl`` after every commit (so the signature covers its
head, and through the hash chain every line before it): ``events.jsonl.sig``, an SSHSIG
that stock ``ssh-keygen -Y verify -I hub -n flsilo-log`` checks. Anyone without the hub key
who rewrites, reorders or extends the log breaks it. A cut tail with an older genuine
signature put back is caught by packages: each carries the log head just before the commit
that records it, so ``audit --against PACKAGE`` proves the log still holds that head and
that the very next commit event (``init`` or ``aggregate``) names that package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flsilo.artifact import Verified
from flsilo.atomic import write_bytes
from flsilo.codes import Code
from flsilo.errors import VerificationError
from flsilo.keys import PrivateKey, PublicKey
from flsilo.sshsig import LOG_NAMESPACE, check_signature, parse_signature, sign_digest
from flsilo.untrusted import read_signature_file
from hub_kit.eventlog import GENESIS, Event

COMMIT_EVENTS = ("init", "aggregate")
"""Events that commit a package (each names the package's sha256)."""


def log_sig_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".sig")


def sign_log(log_path: Path, key: PrivateKey) -> None:
    """Sign the log as it is now (call right after every commit, under the workspace lock)."""
    digest = hashlib.sha256(log_path.read_bytes()).digest()
    write_bytes(log_sig_path(log_path), sign_digest(key, LOG_NAMESPACE, digest))


def check_log_signature(log_path: Path, raw: bytes, hub_key: PublicKey) -> None:
    """Raise unless ``raw`` (the log's bytes) carries a valid hub signature in flsilo-log."""
    sig_file = log_sig_path(log_path)
    data = read_signature_file(sig_file)
    if data is None:
        raise VerificationError(
            "the event log has no hub signature (events.jsonl.sig is missing)",
            path=log_path,
            code=Code.LOG_UNSIGNED,
            hint="a log without the hub's signature cannot be trusted; if a hub command was "
            "interrupted right after its commit, see 'If a command was interrupted' in the hub "
            "administrator's guide; otherwise restore both files from backup and run "
            "'flsilo audit'",
        )
    sig = parse_signature(data, source=str(sig_file))
    digest = hashlib.new(sig.hash_algorithm, raw).digest()
    check_signature(sig, LOG_NAMESPACE, digest, source=str(sig_file))
    if sig.public_key.blob != hub_key.blob:
        raise VerificationError(
            f"the event log is signed by {sig.fingerprint}, not by the hub key "
            f"{hub_key.fingerprint}",
            path=sig_file,
            code=Code.LOG_SIGNATURE,
            hint="the log was rewritten by someone without the hub key; restore it from "
            "backup and run 'flsilo audit'",
        )


def check_against(events: list[Event], package: Verified) -> str | None:
    """Why the log does not contain ``package`` unchanged, or None when it does."""
    info = package.manifest.package
    head = info.log_head if info else None
    if head is None:
        return "the package records no log head (made before the log was anchored)"
    position = 0 if head == GENESIS else None
    for index, ev in enumerate(events, start=1):
        if ev.line_sha256 == head:
            position = index
            break
    if position is None:
        return (
            f"the log head this package recorded ({head[:16]}…) is not in the log: "
            "the history before it was rewritten"
        )
    following = [ev for ev in events[position:] if ev.event in COMMIT_EVENTS]
    if not following:
        return "no commit follows the head this package recorded: the log was cut"
    if following[0]["sha256"] != package.sha256:
        return (
            f"the commit after the recorded head names package {following[0]['sha256'][:16]}…, "
            "not this one: the history was rewritten"
        )
    return None
