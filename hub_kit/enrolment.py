"""Enrol and revoke site keys; fingerprints are confirmed out of band before a key is trusted."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from flsilo.format.manifest import ID_PATTERN, iso_to_epoch
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError, VerificationError
from flsilo.signing.keys import (
    PassphraseSource,
    PublicKey,
    fingerprint_matches,
    load_private_key,
    load_public_key,
)
from flsilo.signing.trust import HUB_PRINCIPAL, format_time
from hub_kit.events import ROLE_RELEASE, ROLE_SITE, Accept, Enroll, Revoke, of_kind
from hub_kit.state import HubState
from hub_kit.workspace import HubWorkspace


def enroll(
    ws: HubWorkspace,
    site: str,
    pubkey: Path,
    fingerprint: str,
    *,
    valid_after: int | None = None,
    valid_before: int | None = None,
    role: str = ROLE_SITE,
    passphrase: PassphraseSource,
) -> str:
    """Trust ``pubkey`` for ``site`` if its fingerprint is the one read over the phone.

    ``role`` is ``site`` (signs bundles) or ``release`` (a release officer, who signs the
    final package in namespace flsilo-release and never bundles).
    """
    if role not in (ROLE_SITE, ROLE_RELEASE):
        raise UsageError(
            f"role {role!r} is not site or release",
            code=Code.BAD_ROLE,
            hint="use --role site (default) or --role release",
        )
    if not ID_PATTERN.match(site) or site == HUB_PRINCIPAL:
        raise UsageError(
            f"site id {site!r} is not valid",
            code=Code.BAD_SITE_ID,
            hint="use lower-case letters, digits, '-', '.', '_'; 'hub' is reserved",
        )
    key = load_public_key(pubkey)
    if not fingerprint_matches(fingerprint, key.fingerprint):
        raise VerificationError(  # never print the file's fingerprint: it must not be pasted
            "this key's fingerprint is not the one confirmed with the site",
            path=pubkey,
            code=Code.FINGERPRINT_MISMATCH,
            hint="this is not the key the site read to you; do not enrol it, call the site "
            "and have them read the fingerprint of the key they sent",
        )
    _check_new(ws, ws.state(), site, key, pubkey)  # before the passphrase is asked
    hub_key = load_private_key(ws.key_path, passphrase)
    event = Enroll(
        site=site,
        key=key.openssh_line(),
        fingerprint=key.fingerprint,
        role=role if role != ROLE_SITE else None,
        valid_after=valid_after,
        valid_before=valid_before,
    )
    with ws.transaction("enroll") as tx:  # checked again under the lock: nothing is lost
        _check_new(ws, tx.state, site, key, pubkey)
        tx.commit([event], hub_key)
    return key.fingerprint


def _check_new(ws: HubWorkspace, state: HubState, site: str, key: PublicKey, pubkey: Path) -> None:
    if any(e.key.blob == key.blob for e in state.enrolments):
        raise UsageError(
            "this key is already enrolled",
            path=pubkey,
            code=Code.ALREADY_ENROLLED,
            hint="a revoked key is never re-enrolled; the site must make a new key",
        )
    if site in state.active_ids():
        raise UsageError(
            f"{site!r} already has an active key",
            code=Code.ALREADY_ENROLLED,
            hint=f"revoke it first: flsilo hub revoke {shlex.quote(str(ws.root))} {site}",
        )


def end_of_validity(ws: HubWorkspace, site: str) -> int:
    """The last second a key of ``site`` stays valid when it is revoked or replaced now.

    valid-before is inclusive in OpenSSH and times are whole seconds: the key must stay valid
    for every bundle already accepted from it (each is judged at its acceptance time) and be
    refused from this very moment on; when the last acceptance was this very second, wait
    for the next one.
    """
    latest = max(
        (iso_to_epoch(ev.time) for ev, a in of_kind(ws.log.read(), Accept) if a.site == site),
        default=0,
    )
    while int(time.time()) - 1 < latest:
        time.sleep(0.05)
    return int(time.time()) - 1


def revoke(ws: HubWorkspace, site: str, *, passphrase: PassphraseSource) -> str:
    """Stop trusting a site's key from this point of the log on; accepted bundles stay valid.

    The hub refuses the key as soon as the revoke is in the log (intake checks the log, not
    the clock), and audit judges each archived bundle by the log's order. A revoke while
    ``aggregate`` runs waits for it (bounded, FLSILO_LOCK_WAIT), so it lands after that
    round's acceptances; if the round takes longer it fails with ``error[locked]``.
    """
    _check_revocable(ws.state(), site)
    hub_key = load_private_key(ws.key_path, passphrase)
    with ws.transaction("revoke") as tx:
        _check_revocable(tx.state, site)
        cut = end_of_validity(ws, site)
        tx.commit([Revoke(site=site, valid_before=cut)], hub_key)
    return format_time(cut)


def _check_revocable(state: HubState, site: str) -> None:
    if site not in state.active_ids():
        raise UsageError(
            f"{site!r} has no active key to revoke",
            code=Code.NOT_ENROLLED,
            hint="see 'flsilo hub status' for enrolled sites",
        )


def rekey(
    ws: HubWorkspace, site: str, pubkey: Path, fingerprint: str, *, passphrase: PassphraseSource
) -> tuple[str, str]:
    """Replace ``site``'s enrolled key with a new one, confirmed by fingerprint, in one commit.

    The old key's validity ends one second before the new key's begins: bundles the hub
    accepted under the old key still audit (each is judged at its acceptance time), and a
    bundle signed with the old key that arrives after the change is refused, since a
    signature carries no signing time and arrival decides. Returns (old, new) fingerprints.
    """
    key = load_public_key(pubkey)
    if not fingerprint_matches(fingerprint, key.fingerprint):
        raise VerificationError(
            f"key fingerprint is {key.fingerprint}, but {fingerprint} was confirmed",
            path=pubkey,
            code=Code.FINGERPRINT_MISMATCH,
            hint="this is not the key the site read to you; do not enrol it, call the site",
        )
    state = ws.state()
    current = [e for e in state.enrolments if e.site == site and e.revoked_at is None]
    if not current:
        raise UsageError(
            f"{site!r} has no active key to replace",
            code=Code.NOT_ENROLLED,
            hint="enrol it with 'flsilo hub enroll' instead",
        )
    if any(e.key.blob == key.blob for e in state.enrolments):
        raise UsageError(
            "this key is already enrolled",
            path=pubkey,
            code=Code.ALREADY_ENROLLED,
            hint="a rotated-out or revoked key is never enrolled again; make a new key",
        )
    hub_key = load_private_key(ws.key_path, passphrase)
    with ws.transaction("rekey") as tx:
        if tx.state.log_head != state.log_head:
            raise UsageError(
                "the hub's log changed while the passphrase was asked",
                code=Code.LOG_CHANGED,
                hint="run the command again",
            )
        cut = end_of_validity(ws, site)
        enrolment = Enroll(
            site=site,
            key=key.openssh_line(),
            fingerprint=key.fingerprint,
            role=current[0].role if current[0].role != ROLE_SITE else None,
            valid_after=cut + 1,
            replaces=current[0].key.fingerprint,
        )
        tx.commit([Revoke(site=site, valid_before=cut), enrolment], hub_key)
    return current[0].key.fingerprint, key.fingerprint
