"""The hub's state, folded from its event log: rounds, packages, enrolments, verdicts, keys.

Pure: :func:`fold` reads typed events (:mod:`hub_kit.events`) and nothing else, so the
workspace, audit (on a copy of a log) and tests derive the same state from the same lines.
Also here, as functions of that state: the ``allowed_signers`` entries the log defines and
the release policy a package carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from flsilo.format.manifest import KeyRotation, ReleaseOfficer, ReleasePolicy, iso_to_epoch
from flsilo.signing.keys import PublicKey, parse_public_line
from flsilo.signing.sshsig import (
    BUNDLE_NAMESPACE,
    LOG_NAMESPACE,
    PACKAGE_NAMESPACE,
    RELEASE_NAMESPACE,
)
from flsilo.signing.trust import HUB_PRINCIPAL, SignerEntry
from hub_kit.eventlog import GENESIS
from hub_kit.events import (
    ROLE_RELEASE,
    ROLE_SITE,
    Accept,
    Aggregate,
    Enroll,
    Init,
    Logged,
    Reject,
    Revoke,
    RotateKey,
)
from hub_kit.privacy import DPAccepted

__all__ = [
    "ROLE_RELEASE",
    "ROLE_SITE",
    "Enrolment",
    "HubState",
    "fold",
    "release_policy",
    "render_allowed_signers",
    "signer_entries",
]


@dataclass(frozen=True)
class Enrolment:
    site: str
    key: PublicKey
    valid_after: int | None = None
    valid_before: int | None = None
    revoked_at: str | None = None
    revoked_before: int | None = None
    """valid-before the revoke wrote to allowed_signers (kept apart from the enrolment's own)."""
    enrolled_seq: int = 0
    revoked_seq: int | None = None
    role: str = ROLE_SITE
    """``site`` (signs bundles) or ``release`` (a release officer: signs final packages)."""

    def active_at(self, seq: int) -> bool:
        """In the log's order: enrolled before event ``seq`` and not yet revoked at it."""
        return self.enrolled_seq < seq and (self.revoked_seq is None or seq < self.revoked_seq)


@dataclass(frozen=True)
class HubState:
    """Everything the log says, folded: current round, packages issued, sites, verdicts.

    Immutable: a hub command reads it once per transaction (``fold``) and changes hub state
    only by appending events, never by editing this object.
    """

    round: int = 0
    packages: Mapping[int, str] = field(default_factory=dict)  # round -> sha256
    package_files: Mapping[int, str] = field(default_factory=dict)
    package_data: Mapping[int, str] = field(default_factory=dict)  # round -> data sha256
    enrolments: tuple[Enrolment, ...] = ()
    accepted: Mapping[str, int] = field(default_factory=dict)  # bundle sha256 -> round
    rejected: frozenset[tuple[int, str, str]] = frozenset()  # (round, sha, code)
    dp_accepted: Mapping[str, tuple[DPAccepted, ...]] = field(default_factory=dict)  # by site
    hub_key: PublicKey | None = None
    log_head: str = GENESIS
    """sha256 of the log's last line: what the next package records as the head before it."""
    rotations: tuple[KeyRotation, ...] = ()
    retired_hub_keys: tuple[tuple[PublicKey, int], ...] = ()
    """Hub keys rotated out, each with the last second it was the hub key."""
    package_keys: Mapping[int, PublicKey] = field(default_factory=dict)
    """round -> the hub key that signed that round's package."""

    def active_sites(self) -> list[str]:
        return sorted(
            {e.site for e in self.enrolments if e.revoked_at is None and e.role == ROLE_SITE}
        )

    def release_officers(self) -> list[Enrolment]:
        """Officers enrolled with ``--role release`` and not revoked, by id."""
        active = [e for e in self.enrolments if e.role == ROLE_RELEASE and e.revoked_at is None]
        return sorted(active, key=lambda e: e.site)

    def enrolment_of(self, key: PublicKey) -> Enrolment | None:
        return next((e for e in self.enrolments if e.key.blob == key.blob), None)

    def active_ids(self) -> set[str]:
        return {e.site for e in self.enrolments if e.revoked_at is None}


@dataclass
class _Folding:
    """The mutable scratch ``fold`` fills event by event before freezing it into a HubState."""

    round: int = 0
    packages: dict[int, str] = field(default_factory=dict)
    package_files: dict[int, str] = field(default_factory=dict)
    package_data: dict[int, str] = field(default_factory=dict)
    enrolments: list[Enrolment] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: set[tuple[int, str, str]] = field(default_factory=set)
    dp_accepted: dict[str, tuple[DPAccepted, ...]] = field(default_factory=dict)
    hub_key: PublicKey | None = None
    log_head: str = GENESIS
    rotations: list[KeyRotation] = field(default_factory=list)
    retired_hub_keys: list[tuple[PublicKey, int]] = field(default_factory=list)
    package_keys: dict[int, PublicKey] = field(default_factory=dict)

    def frozen(self) -> HubState:
        return HubState(
            round=self.round,
            packages=MappingProxyType(self.packages),
            package_files=MappingProxyType(self.package_files),
            package_data=MappingProxyType(self.package_data),
            enrolments=tuple(self.enrolments),
            accepted=MappingProxyType(self.accepted),
            rejected=frozenset(self.rejected),
            dp_accepted=MappingProxyType(self.dp_accepted),
            hub_key=self.hub_key,
            log_head=self.log_head,
            rotations=tuple(self.rotations),
            retired_hub_keys=tuple(self.retired_hub_keys),
            package_keys=MappingProxyType(self.package_keys),
        )

    def init(self, ev: Init) -> None:
        self.packages[0] = ev.sha256
        self.package_files[0] = ev.package
        self.hub_key = parse_public_line(ev.hub_key)
        self.package_keys[0] = self.hub_key

    def enroll(self, ev: Enroll, seq: int) -> None:
        self.enrolments.append(
            Enrolment(
                site=ev.site,
                key=parse_public_line(ev.key),
                valid_after=ev.valid_after,
                valid_before=ev.valid_before,
                role=ev.role_name,
                enrolled_seq=seq,
            )
        )

    def revoke(self, ev: Revoke, seq: int, time: str) -> None:
        self.enrolments = [
            replace(e, revoked_at=time, revoked_before=ev.valid_before, revoked_seq=seq)
            if e.site == ev.site and e.revoked_at is None
            else e
            for e in self.enrolments
        ]

    def rotate(self, ev: RotateKey, time: str) -> None:
        if self.hub_key is None:
            return
        self.retired_hub_keys.append((self.hub_key, iso_to_epoch(time)))
        self.hub_key = parse_public_line(ev.hub_key)
        self.package_keys[self.round] = self.hub_key  # re-signed at the rotation
        self.rotations.append(KeyRotation(ev.statement, ev.old_signature, ev.new_signature))

    def accept(self, ev: Accept) -> None:
        self.accepted[ev.sha256] = ev.round
        if ev.dp_epsilon_total is not None:
            done = self.dp_accepted.get(ev.site, ())  # every accept, across rekeys
            self.dp_accepted[ev.site] = (*done, DPAccepted.of(ev))

    def aggregate(self, ev: Aggregate) -> None:
        self.round = ev.round + 1
        self.packages[self.round] = ev.sha256
        self.package_files[self.round] = ev.package
        if ev.data_sha256 is not None:
            self.package_data[self.round] = ev.data_sha256
        if self.hub_key is not None:
            self.package_keys[self.round] = self.hub_key


def fold(events: Sequence[Logged]) -> HubState:
    state = _Folding()
    for ev in events:
        state.log_head = ev.line_sha256
        body = ev.body
        if isinstance(body, Init):
            state.init(body)
        elif isinstance(body, Enroll):
            state.enroll(body, ev.seq)
        elif isinstance(body, Revoke):
            state.revoke(body, ev.seq, ev.time)
        elif isinstance(body, RotateKey):
            state.rotate(body, ev.time)
        elif isinstance(body, Accept):
            state.accept(body)
        elif isinstance(body, Reject):
            state.rejected.add((body.round, body.sha256, body.code))
        elif isinstance(body, Aggregate):
            state.aggregate(body)
    return state.frozen()


def signer_entries(state: HubState, *, revocations: bool = True) -> list[SignerEntry]:
    """allowed_signers entries; ``revocations=False`` drops the revoke cuts (audit judges a
    bundle by the log's order instead, see :meth:`Enrolment.active_at`)."""
    assert state.hub_key is not None
    entries = [
        SignerEntry(
            principals=HUB_PRINCIPAL, key=key, namespaces=PACKAGE_NAMESPACE, valid_before=until
        )
        for key, until in state.retired_hub_keys
    ]
    entries.append(
        SignerEntry(
            principals=HUB_PRINCIPAL,
            key=state.hub_key,
            namespaces=f"{PACKAGE_NAMESPACE},{LOG_NAMESPACE}",
        )
    )
    for e in state.enrolments:
        entries.append(
            SignerEntry(
                principals=e.site,
                key=e.key,
                namespaces=RELEASE_NAMESPACE if e.role == ROLE_RELEASE else BUNDLE_NAMESPACE,
                valid_after=e.valid_after,
                valid_before=_valid_before(e, revocations),
            )
        )
    return entries


def _valid_before(e: Enrolment, revocations: bool) -> int | None:
    cuts = [c for c in (e.valid_before, e.revoked_before if revocations else None) if c is not None]
    return min(cuts) if cuts else None


def release_policy(state: HubState, required: int) -> ReleasePolicy | None:
    """What a package carries for m-of-n release sign-off (None when the federation has none)."""
    if required < 1:
        return None
    officers = tuple(
        ReleaseOfficer(id=e.site, key=e.key.openssh_line()) for e in state.release_officers()
    )
    return ReleasePolicy(signers_required=required, officers=officers)


def render_allowed_signers(state: HubState) -> str:
    lines = [
        "# flsilo allowed_signers, generated from events.jsonl by enroll/revoke: do not edit.",
        "# Verify a bundle: ssh-keygen -Y verify -f allowed_signers -I SITE -n flsilo-bundle "
        "-s FILE.sig < FILE",
    ]
    return "\n".join(lines + [e.format() for e in signer_entries(state)]) + "\n"
