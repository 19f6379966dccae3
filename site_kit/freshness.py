"""Freshness: a site refuses to train on an expired package unless its operator says so."""

from __future__ import annotations

import time
from pathlib import Path

from flsilo.format import manifest as mf
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError


def check_fresh(
    manifest: mf.Manifest, package: Path, *, accept_expired: bool, now: int | None = None
) -> str | None:
    """Raise on an expired package; return the override time when the operator accepted one.

    Closes the freeze attack (a stale but genuine package fed to a site). The returned time
    goes into the bundle's manifest so the hub and auditors see the override.
    """
    expires = manifest.package.expires_at if manifest.package else None
    moment = int(time.time()) if now is None else now
    if expires is None or moment <= mf.iso_to_epoch(expires):
        return None
    if accept_expired:
        return mf.epoch_to_iso(moment)
    raise PolicyError(
        f"package for round {manifest.round} expired at {expires} (this machine's clock says "
        f"{mf.epoch_to_iso(moment)})",
        path=package,
        code=Code.PACKAGE_EXPIRED,
        hint="ask the hub for the current package; if this one is right and the clock or the "
        "trip was slow, rerun with --accept-expired (recorded in the bundle)",
    )
