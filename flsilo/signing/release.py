"""Release sign-off: officers' ``flsilo-release`` signatures beside a final package, m of n.

The package itself names its officers (id and public key) and how many must sign, under the
hub's signature; so a site or auditor needs only the package, the hub key and the
``PACKAGE.release-OFFICER.sig`` files beside it. Each officer's file is a plain SSHSIG
(``ssh-keygen -Y verify -n flsilo-release`` checks it). Checked against the hub's
``allowed_signers`` (``verify --signers``), an officer whose key the hub has revoked since
(a ``valid-before`` passed) does not count, even for a signature made before the revoke:
the signature carries no time, and the revoke may be the answer to that very signature.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from flsilo.format import manifest as mf
from flsilo.format.artifact import Scan, Verified, scan_file
from flsilo.fs.atomic import write_bytes
from flsilo.fs.untrusted import read_signature_file
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, UsageError, VerificationError
from flsilo.signing.keys import PrivateKey, parse_public_line, public_of
from flsilo.signing.sshsig import RELEASE_NAMESPACE, check_signature, parse_signature, sign_digest
from flsilo.signing.trust import AllowedSigners, TrustPolicy


def release_sig_path(package: Path, officer: str) -> Path:
    return package.with_name(f"{package.name}.release-{officer}.sig")


@dataclass(frozen=True)
class ReleaseReport:
    """Which officers' signatures verified, which did not (and why), and how many were needed."""

    required: int
    signed: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    not_counted: tuple[tuple[str, str], ...] = ()
    """Officers whose signature verifies but whose key the trust file no longer allows (a
    revoked officer), each with why."""


def _policy(manifest: mf.Manifest, source: str) -> mf.ReleasePolicy:
    release = manifest.package.release if manifest.package else None
    if release is None or not manifest.package or not manifest.package.final:
        raise VerificationError(
            "this is not a final package of a federation with release sign-off",
            path=source,
            code=Code.NO_RELEASE_POLICY,
            hint="release officers sign only the final package of a federation whose hub set "
            "--release-signers",
        )
    return release


def sign_release(package: Path, key: PrivateKey, officer: str) -> Path:
    """Sign ``package`` as ``officer`` in namespace flsilo-release; return the .sig path."""
    scan = scan_file(package)
    policy = _policy(scan.manifest, str(package))
    public = public_of(key)
    listed = {o.id: o.key for o in policy.officers}
    if officer not in listed:
        raise UsageError(
            f"{officer!r} is not a release officer of this package "
            f"(officers: {', '.join(sorted(listed)) or 'none'})",
            path=package,
            code=Code.NOT_AN_OFFICER,
            hint="the hub enrols officers with 'flsilo hub enroll ... --role release' before the "
            "final round",
        )
    if parse_public_line(listed[officer]).blob != public.blob:
        raise UsageError(
            f"this key ({public.fingerprint}) is not the key enrolled for {officer!r}",
            path=package,
            code=Code.NOT_AN_OFFICER,
            hint="sign with the key whose .pub the hub enrolled for you",
        )
    out = release_sig_path(package, officer)
    if out.exists():
        raise UsageError(
            "this officer's release signature already exists",
            path=out,
            code=Code.EXISTS,
            hint="a release signature is never replaced; move the old one away if it is wrong",
        )
    write_bytes(out, sign_digest(key, RELEASE_NAMESPACE, scan.digests["sha256"]))
    return out


def _digest(scan: Scan, algorithm: str) -> bytes:
    if algorithm in scan.digests:
        return scan.digests[algorithm]
    digest = hashlib.new(algorithm)  # a stock ssh-keygen signature (sha512): one more read
    with scan.path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    return digest.digest()


def _check_officer(scan: Scan, officer: str, key_line: str) -> None:
    path = release_sig_path(scan.path, officer)
    data = read_signature_file(path)
    if data is None:
        raise VerificationError("no signature", path=path, code=Code.RELEASE_MISSING)
    sig = parse_signature(data, source=str(path))
    if sig.public_key.blob != parse_public_line(key_line).blob:
        raise VerificationError(
            f"signed by {sig.fingerprint}, not by the key the package names for {officer!r}",
            path=path,
            code=Code.UNKNOWN_SIGNER,
        )
    check_signature(sig, RELEASE_NAMESPACE, _digest(scan, sig.hash_algorithm), source=str(path))


def check_release(
    verified: Verified, required: int, trust: TrustPolicy | None = None, at: int | None = None
) -> ReleaseReport:
    """Count the officers' valid signatures; raise unless at least max(required, m) verify.

    With an ``allowed_signers`` as ``trust``, an officer counts only while that file allows
    the officer's key in namespace flsilo-release at ``at`` (default now): one the hub
    revoked after signing is reported in ``not_counted`` and does not count.
    """
    source = str(verified.path)
    policy = _policy(verified.manifest, source)
    need = max(required, policy.signers_required)
    signed: list[str] = []
    failed: list[tuple[str, str]] = []
    not_counted: list[tuple[str, str]] = []
    when = int(time.time()) if at is None else at
    for officer in policy.officers:
        try:
            _check_officer(verified.scan, officer.id, officer.key)
        except FlsiloError as err:
            failed.append((officer.id, err.code))
            continue
        if isinstance(trust, AllowedSigners):
            try:
                key = parse_public_line(officer.key)
                trust.check(officer.id, RELEASE_NAMESPACE, key, when, source=source)
            except FlsiloError as err:
                failed.append((officer.id, err.code))
                not_counted.append((officer.id, err.message))
                continue
        signed.append(officer.id)
    report = ReleaseReport(need, tuple(signed), tuple(failed), tuple(not_counted))
    if len(signed) < need:
        uncounted = "; ".join(f"{o}'s signature does not count: {why}" for o, why in not_counted)
        raise VerificationError(
            f"{len(signed)} of the {need} required release signatures verify"
            + (f" (signed: {', '.join(signed)})" if signed else "")
            + (f"; {uncounted}" if uncounted else ""),
            path=source,
            code=Code.RELEASE_NOT_SIGNED,
            hint="do not deploy this model; each officer runs 'flsilo release sign' and the "
            "PACKAGE.release-OFFICER.sig files travel with the package",
        )
    return report


@dataclass(frozen=True)
class OfficerState:
    """One release officer a package names, and what sits beside the package for them."""

    id: str
    fingerprint: str
    signature: str
    """'valid', or the error code: release-missing (no file yet), unknown-signer, ..."""


def officer_states(scan: Scan) -> tuple[int, tuple[OfficerState, ...]] | None:
    """For ``inspect``: how many officers must sign, and each one's signature beside the
    package; None when the package names no officers. Nothing is trusted or raised."""
    release = scan.manifest.package.release if scan.manifest.package else None
    if release is None:
        return None
    states = []
    for officer in release.officers:
        try:
            _check_officer(scan, officer.id, officer.key)
            state = "valid"
        except FlsiloError as err:
            state = str(err.code)
        fingerprint = parse_public_line(officer.key).fingerprint
        states.append(OfficerState(officer.id, fingerprint, state))
    return release.signers_required, tuple(states)
