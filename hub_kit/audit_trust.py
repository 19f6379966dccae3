"""``audit``'s trust root and anchors: the hub key the auditor confirmed out of band, the log's
key history checked against it, and what the workspace says about keys and later rounds.

The workspace never names its own trust root. The auditor gives the hub key's fingerprint
(read over the phone) or a copy of the key; it must be the ``init`` event's key or a key the
log's ``rotate-key`` events reach, each statement checked exactly as a site checks the
chain a package carries (both signatures, namespace ``flsilo-root``, federation, place in
the chain, never back to a key it left). Only then are the log's hub keys used: for the log
signature, every package, ``hub.pub``, ``hub.toml`` and ``allowed_signers``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flsilo.format import manifest as mf
from flsilo.format.artifact import read_signature, sha256_file, verify_file
from flsilo.format.manifest import KeyRotation
from flsilo.plans.federation import read_toml
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, UsageError
from flsilo.signing.keys import PublicKey, fingerprint_matches, load_public_key, parse_public_line
from flsilo.signing.rotation import follow_chain, rotation_keys
from flsilo.signing.trust import SingleKey
from hub_kit.anchor import check_against, check_log_signature
from hub_kit.events import Aggregate, Init, Logged, RotateKey, of_kind
from hub_kit.server_state import STATE_DIR
from hub_kit.state import HubState
from hub_kit.workspace import HUB_FILE, HubWorkspace

if TYPE_CHECKING:
    from hub_kit.audit import AuditReport

FINGERPRINT = re.compile(r"(SHA256:)?[A-Za-z0-9+/]{43}")
ROOT_HINT = (
    "pass --hub-fingerprint SHA256:... as the hub administrator reads it to you over the "
    "phone (they ran 'flsilo keys fingerprint hub.pub' on the hub's own machine at 'hub "
    "init'), or --hub-key PUBKEY with a copy of the hub key you hold; never take it from the "
    "workspace you audit"
)


@dataclass(frozen=True)
class TrustRoot:
    """The hub key the auditor confirmed outside the workspace, and how it was given."""

    fingerprint: str
    given: str  # "--hub-fingerprint" or "--hub-key"
    file: str | None = None
    key: PublicKey | None = None

    def matches(self, key: PublicKey) -> bool:
        if self.key is not None:
            return self.key.blob == key.blob
        return fingerprint_matches(self.fingerprint, key.fingerprint)


def trust_root(fingerprint: str | None, key_file: Path | None) -> TrustRoot:
    """The trust root from ``--hub-fingerprint`` or ``--hub-key``: exactly one is required."""
    if fingerprint is None and key_file is None:
        raise UsageError(
            "audit needs the hub key confirmed outside the workspace",
            code=Code.AUDIT_TRUST_ROOT,
            hint=ROOT_HINT,
        )
    if fingerprint is not None and key_file is not None:
        raise UsageError(
            "give --hub-fingerprint or --hub-key, not both",
            code=Code.AUDIT_TRUST_ROOT,
            hint=ROOT_HINT,
        )
    if key_file is not None:
        key = load_public_key(key_file)
        return TrustRoot(key.fingerprint, "--hub-key", str(key_file), key)
    assert fingerprint is not None
    text = fingerprint.strip()
    if not FINGERPRINT.fullmatch(text):
        raise UsageError(
            f"--hub-fingerprint {fingerprint!r} is not an OpenSSH SHA256 fingerprint",
            code=Code.AUDIT_TRUST_ROOT,
            hint="it looks like SHA256: followed by 43 characters; " + ROOT_HINT,
        )
    return TrustRoot(text if text.startswith("SHA256:") else "SHA256:" + text, "--hub-fingerprint")


def hub_key_history(
    events: Sequence[Logged], federation: str, source: str
) -> tuple[list[PublicKey], str | None]:
    """The ``init`` key and each key the log's rotation statements lead to, in order, and why
    the history stops short (None when every statement verifies and chains on)."""
    init = events[0].body if events else None
    if not isinstance(init, Init):
        return [], "the log does not start with an init event"
    try:
        keys = [parse_public_line(init.hub_key)]
    except FlsiloError as err:
        return [], f"the init event names no readable hub key ({err})"
    chain: list[KeyRotation] = []
    for ev, rotate in of_kind(events, RotateKey):
        seq = len(chain) + 1
        where = f"rotation {seq} (event {ev.seq})"
        try:
            rotation = KeyRotation(rotate.statement, rotate.old_signature, rotate.new_signature)
            old, new = rotation_keys(rotation, federation, seq, source=source)
            logged = parse_public_line(rotate.hub_key)
        except FlsiloError as err:
            return keys, f"{where}: {err.message}"
        if old.blob != keys[-1].blob:
            return keys, f"{where}: its statement does not start at the hub key before it"
        if logged.blob != new.blob:
            return keys, f"{where}: the event names another key than its signed statement"
        chain.append(rotation)
        keys.append(new)
    try:  # the site's own rules over the whole chain (never back to a key it left)
        end = follow_chain(keys[0], tuple(chain), federation, source=source)
    except FlsiloError as err:
        return keys, err.message
    if end.blob != keys[-1].blob:
        return keys, "the rotation statements do not lead to the log's last hub key"
    return keys, None


def check_trust_root(
    report: AuditReport,
    events: Sequence[Logged],
    federation: str,
    root: TrustRoot,
    source: str,
) -> bool:
    """Add the rotation and trust-root checks; True when the log's hub keys may be used."""
    keys, problem = hub_key_history(events, federation, source)
    report.add(
        "hub key rotations",
        problem is None,
        problem
        or (
            f"{len(keys) - 1} statements, each signed by its old and new key (flsilo-root)"
            if len(keys) > 1
            else "none: the init key is the hub key"
        ),
    )
    place = next((i for i, key in enumerate(keys) if root.matches(key)), None)
    reached = None if place is None else "the init key" if place == 0 else f"rotation {place}"
    report.trust_root = {
        "fingerprint": root.fingerprint,
        "given": root.given,
        "file": root.file,
        "reached": reached,
    }
    if place is None:
        detail = (
            f"{root.fingerprint} (from {root.given}) is neither the init event's hub key nor "
            "one its verified rotation statements lead to: this log is not the history of "
            "the hub you confirmed"
        )
    else:
        where = "the init event's hub key" if place == 0 else f"the key rotation {place} led to"
        detail = f"{root.fingerprint} (from {root.given}) is {where}"
    report.add("trust root", place is not None, detail)
    # every event's key is its statement's new key, so the log's hub keys are exactly ``keys``
    return problem is None and place is not None


def audit_hub_key_copies(ws: HubWorkspace, report: AuditReport, state: HubState) -> None:
    """hub.pub and hub.toml's fingerprint, where present, must be the log's (current) hub key."""
    assert state.hub_key is not None
    problems = []
    pub = ws.root / "hub.pub"
    if pub.exists():
        try:
            if load_public_key(pub).blob != state.hub_key.blob:
                problems.append("hub.pub is not the hub key in the log")
        except FlsiloError as err:
            problems.append(err.one_line())
    settings = ws.root / HUB_FILE
    if settings.exists():
        fingerprint = read_toml(settings, "hub settings").get("fingerprint")
        if fingerprint not in (None, state.hub_key.fingerprint):
            problems.append("hub.toml names another hub key fingerprint")
    report.add(
        "hub key copies",
        not problems,
        "; ".join(problems) or "hub.pub and hub.toml match the log's hub key",
    )


def audit_anchor(
    ws: HubWorkspace,
    report: AuditReport,
    raw: bytes,
    events: Sequence[Logged],
    state: HubState,
    against: tuple[Path, ...],
) -> None:
    """The hub's log signature, what the workspace holds past the log, ``--against`` packages."""
    assert state.hub_key is not None
    try:
        check_log_signature(ws.log.path, raw, state.hub_key)
        report.add(
            "event log signature", True, f"signed by the hub key {state.hub_key.fingerprint}"
        )
    except FlsiloError as err:
        report.add("event log signature", False, err.one_line())
    known = set(state.package_files.values())
    unknown = [n for n in ws.unrecorded(state) if n.startswith("packages/")]
    listed = (
        f"all {len(known)} packages in packages/ are"
        if len(known) != 1
        else "the 1 package in packages/ is"
    )
    report.add(
        "packages known to the log",
        not unknown,
        f"{'; '.join(unknown)}: the log's tail was cut" if unknown else f"{listed} in the log",
    )
    audit_state_files(ws, report, events)
    hub_keys = [key for key, _until in state.retired_hub_keys] + [state.hub_key]
    for path in against:
        name = f"against {path.name}"
        try:
            signer = read_signature(path).public_key
            key = next((k for k in hub_keys if k.blob == signer.blob), state.hub_key)
            verified = verify_file(
                path, SingleKey(key, "the hub keys"), expected_kind=mf.KIND_PACKAGE
            )
        except FlsiloError as err:
            report.add(name, False, err.one_line())
            continue
        problem = check_against(events, verified)
        report.add(
            name, problem is None, problem or "the log holds this package's history unchanged"
        )


def audit_state_files(ws: HubWorkspace, report: AuditReport, events: Sequence[Logged]) -> None:
    """Each server optimizer state file the log names, against its digest there; and no state
    file the log does not name (a round cut from the log leaves its state behind)."""
    logged = {
        a.server_state: a.server_state_sha256
        for _, a in of_kind(events, Aggregate)
        if a.server_state
    }
    folder = ws.root / STATE_DIR
    for name, sha in logged.items():
        path = folder / name
        ok = path.is_file() and not path.is_symlink() and sha256_file(path) == sha
        report.add(
            f"server state {name}",
            ok,
            f"matches the log's sha256 {str(sha)[:16]}…"
            if ok
            else f"{STATE_DIR}/{name} is missing or differs from the digest in the log",
        )
    extra = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    extra = [n for n in extra if n not in logged and not n.startswith(".")]
    if extra or logged:
        report.add(
            "server state files known to the log",
            not extra,
            f"the log names no {', '.join(extra)}: its tail was cut"
            if extra
            else f"all {len(logged)} state files are in the log",
        )
