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
from collections.abc import Callable, Sequence
from pathlib import Path

from flsilo.format.artifact import Verified
from flsilo.fs.atomic import write_bytes
from flsilo.fs.untrusted import read_signature_file
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, VerificationError, WorkspaceError
from flsilo.runtime.faults import fault_point
from flsilo.runtime.notices import notice
from flsilo.signing.keys import PrivateKey, PublicKey
from flsilo.signing.sshsig import LOG_NAMESPACE, check_signature, parse_signature, sign_digest
from hub_kit.eventlog import GENESIS
from hub_kit.events import Aggregate, Init, Logged
from hub_kit.journal import Pending, clear_journal, journal_path, read_journal, write_journal

COMMIT_EVENTS = (Init, Aggregate)
"""Events that commit a package (each names the package's sha256)."""


def log_sig_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".sig")


def log_signature(key: PrivateKey, raw: bytes) -> bytes:
    """The hub's signature (flsilo-log) over the log's bytes ``raw``."""
    return sign_digest(key, LOG_NAMESPACE, hashlib.sha256(raw).digest())


def sign_log(log_path: Path, key: PrivateKey, raw: bytes | None = None) -> None:
    """Sign the log (``raw``, its bytes as written, else as it is now) under the lock."""
    data = log_path.read_bytes() if raw is None else raw
    write_bytes(log_sig_path(log_path), log_signature(key, data))


def check_log_signature(log_path: Path, raw: bytes, hub_key: PublicKey) -> Pending | None:
    """Raise unless ``raw`` (the log's bytes) carries a valid hub signature in flsilo-log.

    A log whose signature does not cover it is still accepted when the pending-commit
    journal (:mod:`hub_kit.journal`) holds exactly the part not covered and the hub's
    signature over the whole: that journal is returned, for a writer to complete the
    signature. None when ``events.jsonl.sig`` itself covers the log.
    """
    try:
        _check_signature_file(log_path, raw, hub_key)
        return None
    except FlsiloError:
        pending = read_journal(log_path)
        if pending is None or not pending.covers(raw):
            raise
        try:
            _check_bytes(pending.signature, raw, hub_key, journal_path(log_path))
        except FlsiloError:
            pass
        else:
            return pending
        raise


def _check_signature_file(log_path: Path, raw: bytes, hub_key: PublicKey) -> None:
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
    _check_bytes(data, raw, hub_key, sig_file)


def _check_bytes(data: bytes, raw: bytes, hub_key: PublicKey, sig_file: Path) -> None:
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


def write_signed_log(
    log_path: Path, base: bytes, raw: bytes, key: PrivateKey, after_append: Callable[[], None]
) -> None:
    """Replace the log ``base`` by ``raw`` (its append) and sign it, under the workspace lock.

    The pending-commit journal goes first, so a kill at any step below is completed by the
    next command (:func:`finish_pending`); each step is a fault point ``log:STEP``.
    """
    signature = log_signature(key, raw)
    write_journal(log_path, base, raw, signature)
    fault_point("log:journal")
    write_bytes(log_path, raw)
    fault_point("log:appended")
    try:
        after_append()
        fault_point("log:signers")
        write_bytes(log_sig_path(log_path), signature)
    except WorkspaceError as err:
        if err.code != Code.DISK_FULL:
            raise
        raise WorkspaceError(  # not 'nothing was changed': the log holds the commit
            "disk full after the commit reached the event log, before it was signed; "
            "the next hub command completes it",
            path=err.path,
            code=Code.DISK_FULL,
            hint="free space on the disk holding the hub workspace and run the command again",
        ) from err
    fault_point("log:signed")
    clear_journal(log_path)


def finish_pending(log_path: Path, pending: Pending | None, lines: int) -> None:
    """Under the lock, after the log (of ``lines`` lines) was accepted: when it was accepted on
    the journal's signature, put that signature in place and say so (the caller regenerated
    allowed_signers first); drop any journal left (one of a commit that never reached the log)."""
    if pending is not None:
        write_bytes(log_sig_path(log_path), pending.signature)
        first = lines - pending.lines() + 1
        notice(
            f"{log_path}: completed the hub's signature over lines {first}-{lines}, appended "
            "by a command interrupted before it signed them (they are byte-identical to the "
            "pending-commit journal it wrote first)"
        )
    clear_journal(log_path)


def check_against(events: Sequence[Logged], package: Verified) -> str | None:
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
    following = [ev.body for ev in events[position:] if isinstance(ev.body, COMMIT_EVENTS)]
    if not following:
        return "no commit follows the head this package recorded: the log was cut"
    named = following[0].sha256
    if named != package.sha256:
        return (
            f"the commit after the recorded head names package {named[:16]}…, "
            "not this one: the history was rewritten"
        )
    return None
