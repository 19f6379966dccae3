"""What a site holds, what it trained, and what to carry: read-only, torch-free.

Every package and bundle in the workspace is verified (packages against the hub key,
bundles against the site's own key), so a damaged file is reported as damaged, never as
missing. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flsilo.format.artifact import sig_path, verify_file
from flsilo.format.copynames import misnamed_files
from flsilo.format.manifest import KIND_BUNDLE, KIND_PACKAGE
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.keys import PublicKey, parse_public_line
from flsilo.signing.sshsig import BUNDLE_NAMESPACE, PACKAGE_NAMESPACE
from flsilo.signing.trust import HUB_PRINCIPAL, AllowedSigners, SignerEntry
from site_kit import record as site_record
from site_kit.state import SiteState
from site_kit.workspace import SiteWorkspace


@dataclass
class FileStatus:
    file: str
    round: int | None
    state: str  # "ok", "damaged", "unsigned", "old-key"
    detail: str = ""
    final: bool = False


@dataclass
class SiteStatus:
    site: str
    federation: str
    hub_fingerprint: str
    """The hub key trusted now (the confirmed one, or where a rotation chain led)."""
    confirmed_hub_fingerprint: str
    last_round_trained: int
    packages: list[FileStatus] = field(default_factory=list)
    outbox: list[FileStatus] = field(default_factory=list)
    trained: list[dict[str, Any]] = field(default_factory=list)
    record_ok: bool = True
    record_detail: str = ""
    carry: list[str] = field(default_factory=list)
    next_package: str | None = None
    data: str | None = None
    """The training data site.toml names (None: none set; --data is then needed)."""
    data_found: bool = False
    misnamed: list[str] = field(default_factory=list)
    """Files in packages/ and outbox/ not read because a copy changed their extension
    (``X.SAFETENSORS``), each with the name to give it."""
    require_evaluations: int = 0
    """Sites whose signed evaluation reports on the final package must verify at the hub
    before it is final for use (the federation's ``[hub]`` setting; 0: final when made)."""


def _check(path: Path, trust: Any, kind: str) -> FileStatus:
    if not sig_path(path).exists():
        return FileStatus(path.name, None, "unsigned", f"{sig_path(path).name} is missing")
    try:
        verified = verify_file(path, trust, expected_kind=kind)
    except FlsiloError as err:
        return FileStatus(path.name, None, "damaged", f"{err.code}: {err.message}")
    m = verified.manifest
    final = bool(m.package and m.package.final)
    return FileStatus(path.name, m.round, "ok", verified.sha256[:16], final)


def _hub_trust(keys: list[PublicKey], root: Path) -> AllowedSigners | None:
    entries = [
        SignerEntry(principals=HUB_PRINCIPAL, key=k, namespaces=PACKAGE_NAMESPACE) for k in keys
    ]
    return AllowedSigners(entries, source=str(root / "hub.pub")) if entries else None


def _site_trust(site: str, keys: list[PublicKey], root: Path) -> AllowedSigners:
    entries = [SignerEntry(principals=site, key=k, namespaces=BUNDLE_NAMESPACE) for k in keys]
    return AllowedSigners(entries, source=str(root / "site.toml"))


def _check_bundle(path: Path, trust: Any, old_trust: Any) -> FileStatus:
    """A bundle signed with the site's key; one signed with a key 'site rekey' replaced is
    'old-key' (the hub refuses it now), not damaged."""
    status = _check(path, trust, KIND_BUNDLE)
    if status.state == "damaged" and old_trust is not None:
        older = _check(path, old_trust, KIND_BUNDLE)
        if older.state == "ok":
            return FileStatus(
                path.name,
                older.round,
                "old-key",
                "signed with the key 'site rekey' replaced: not to carry, the hub refuses "
                "it unless it accepted it before the rekey",
            )
    return status


def _check_package(path: Path, trust: Any, old_trust: Any, state: SiteState) -> FileStatus:
    """A package signed with the hub key trusted now. One signed with a hub key this site
    has moved on from (a rotation) is 'ok' only if the site trained on it while it trusted
    that key; else 'old-key': a retired key (perhaps retired for a leak) signs nothing new."""
    status = _check(path, trust, KIND_PACKAGE)
    if status.state != "damaged" or old_trust is None:
        return status
    try:
        verified = verify_file(path, old_trust, expected_kind=KIND_PACKAGE)
    except FlsiloError:
        return status
    m = verified.manifest
    if state.package_for(m.round) == verified.sha256:
        final = bool(m.package and m.package.final)
        return FileStatus(path.name, m.round, "ok", verified.sha256[:16], final)
    return FileStatus(
        path.name,
        m.round,
        "old-key",
        "signed by a hub key this site has moved on from (a rotation) and never trained "
        "here: do not train it; ask the hub for its current package",
    )


def site_status(root: Path) -> SiteStatus:
    ws = SiteWorkspace.open(root)
    state = ws.state()
    status = SiteStatus(
        site=ws.config.site_id,
        federation=ws.config.federation,
        hub_fingerprint=ws.hub_key().fingerprint,
        confirmed_hub_fingerprint=ws.config.hub_fingerprint,
        last_round_trained=state.last_round,
    )
    data = ws.data_path
    status.data = None if data is None else str(data)
    status.data_found = data is not None and data.exists()
    status.require_evaluations = ws.federation.hub.require_evaluations
    # packages held were signed by the hub key trusted when each arrived
    now = ws.hub_key()
    retired = [k for k in ws.hub_keys_held() if k.blob != now.blob]
    status.packages = [
        _check_package(p, ws.trust(now), _hub_trust(retired, root), state)
        for p in sorted(ws.packages.glob("*.safetensors"))
    ]
    status.misnamed = [*misnamed_files(ws.packages), *misnamed_files(ws.outbox)]
    events: list[site_record.Recorded] = []
    try:
        events = site_record.events(root)
    except FlsiloError as err:
        status.record_ok, status.record_detail = False, err.one_line()
    status.trained = [e.record() for e in events if isinstance(e.body, site_record.Trained)]
    own = parse_public_line(ws.config.site_key, source=str(root / "site.toml"))  # as enrolled
    site_trust = _site_trust(ws.config.site_id, [own], root)
    rekeys = site_record.of_kind(events, site_record.Rekeyed)
    old_keys = [parse_public_line(r.old_site_key) for r in rekeys if r.old_site_key]
    old_trust = _site_trust(ws.config.site_id, old_keys, root) if old_keys else None
    status.outbox = [
        _check_bundle(p, site_trust, old_trust) for p in sorted(ws.outbox.glob("*.safetensors"))
    ]
    good = [b for b in status.outbox if b.state == "ok" and b.round is not None]
    if good:
        newest = max(b.round for b in good if b.round is not None)
        for b in good:
            if b.round == newest:
                status.carry += [str(ws.outbox / b.file), str(sig_path(ws.outbox / b.file))]
    fresh = [
        p for p in status.packages
        if p.state == "ok" and p.round is not None and p.round > status.last_round_trained and not p.final
    ]  # fmt: skip
    if fresh:
        status.next_package = str(ws.packages / max(fresh, key=lambda p: p.round or 0).file)
    return status
