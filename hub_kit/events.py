"""The hub's event kinds, typed: one frozen dataclass per kind, each with its JSON form.

A line of ``events.jsonl`` is the event's own fields plus the chain fields (``seq``,
``time``, ``event``, ``prev``, added by :mod:`flsilo.fs.hashchain`), as canonical JSON with
sorted keys. ``to_json`` gives exactly the fields the hub has always written, and
``from_json`` refuses anything it would not write back byte for byte: a missing or
mistyped field (an edited log), or a field this flsilo does not know (a newer flsilo wrote
it: the upgrade hint, as for an unknown kind). The codec is :mod:`flsilo.fs.jsonfields`.

Optional fields are of two sorts, as the log has always had them: ``LEFT_OUT`` fields
are left out of the line when unset (a rekey's ``replaces``, a DP bundle's privacy
figures, a round's gates), the others are always written, ``null`` when unset (an
aggregate's ``server_state``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from flsilo.fs.jsonfields import LEFT_OUT, FieldError, JsonFields


class Kind(StrEnum):
    """Every event kind the hub's log holds; a kind not here is a newer flsilo's."""

    INIT = "init"
    ENROLL = "enroll"
    REVOKE = "revoke"
    ACCEPT = "accept"
    REJECT = "reject"
    AGGREGATE = "aggregate"
    ROTATE_KEY = "rotate-key"
    EVALUATION = "evaluation"


ROLE_SITE = "site"
ROLE_RELEASE = "release"


@dataclass(frozen=True)
class Init(JsonFields):
    """The federation's start: its round-0 package and the hub key (``hub init``)."""

    KIND: ClassVar[Kind] = Kind.INIT
    federation: str
    package: str
    sha256: str
    hub_key: str
    round: int = 0
    start: Mapping[str, Any] | None = field(default=None, metadata=LEFT_OUT)
    """The provenance of a ``backbone import`` start file, when the weights came from one."""
    require_evaluations: int | None = field(default=None, metadata=LEFT_OUT)
    """``hub init --require-evaluations M``: sites whose signed evaluation reports on the
    final package must verify before it is final for use (``hub_kit.finality``)."""


@dataclass(frozen=True)
class Enroll(JsonFields):
    """A site's (or a release officer's) key, trusted after its fingerprint was confirmed."""

    KIND: ClassVar[Kind] = Kind.ENROLL
    site: str
    key: str
    fingerprint: str
    role: str | None = field(default=None, metadata=LEFT_OUT)
    """``release`` for an officer; left out for a site."""
    valid_after: int | None = field(default=None, metadata=LEFT_OUT)
    valid_before: int | None = field(default=None, metadata=LEFT_OUT)
    replaces: str | None = field(default=None, metadata=LEFT_OUT)
    """A rekey: the fingerprint of the key this one replaces (revoked in the same commit)."""

    @property
    def role_name(self) -> str:
        return self.role or ROLE_SITE


@dataclass(frozen=True)
class Revoke(JsonFields):
    """A site's key is no longer trusted from this point of the log on."""

    KIND: ClassVar[Kind] = Kind.REVOKE
    site: str
    valid_before: int
    """The last second the key stays valid, as written into ``allowed_signers``."""


@dataclass(frozen=True)
class RotateKey(JsonFields):
    """The hub key rotated: the statement signed by the old and the new key."""

    KIND: ClassVar[Kind] = Kind.ROTATE_KEY
    statement: str
    old_signature: str
    new_signature: str
    hub_key: str
    fingerprint: str


@dataclass(frozen=True)
class ReportedMetrics(JsonFields):
    """What a site said about a model on its validation split (in its bundle's manifest)."""

    accuracy: float | None
    loss: float | None
    samples: int | None
    values: Mapping[str, float] | None = field(default=None, metadata=LEFT_OUT)
    """The task's own figures (its primary metric among them); left out for classify."""


@dataclass(frozen=True)
class Accept(JsonFields):
    """A bundle accepted into a round, with its weight and what the site reported."""

    KIND: ClassVar[Kind] = Kind.ACCEPT
    round: int
    site: str
    sha256: str
    file: str
    samples: int
    weight: float
    base_round: int
    dp_epsilon_round: float | None = field(default=None, metadata=LEFT_OUT)
    dp_epsilon_total: float | None = field(default=None, metadata=LEFT_OUT)
    dp_rounds: int | None = field(default=None, metadata=LEFT_OUT)
    metrics_global: ReportedMetrics | None = field(default=None, metadata=LEFT_OUT)
    metrics_trained: ReportedMetrics | None = field(default=None, metadata=LEFT_OUT)
    weight_capped: bool = field(default=False, metadata=LEFT_OUT)


@dataclass(frozen=True)
class Reject(JsonFields):
    """A file refused at intake, with the error code and message it got."""

    KIND: ClassVar[Kind] = Kind.REJECT
    round: int
    site: str
    sha256: str
    file: str
    code: str
    reason: str


@dataclass(frozen=True)
class Aggregate(JsonFields):
    """A round committed: the package it made and how (the rule, gates, server step)."""

    KIND: ClassVar[Kind] = Kind.AGGREGATE
    round: int
    package: str
    sha256: str
    strategy: str
    inputs: int
    merge: str
    server_optimizer: str
    server_state: str | None
    server_state_sha256: str | None
    data_sha256: str | None = field(default=None, metadata=LEFT_OUT)
    """The package's data section's digest (left out by the earliest logs)."""
    norm_gate: float | None = field(default=None, metadata=LEFT_OUT)
    cosine_gate: float | None = field(default=None, metadata=LEFT_OUT)
    max_weight_share: float | None = field(default=None, metadata=LEFT_OUT)
    hub_evaluation: Mapping[str, Any] | None = field(default=None, metadata=LEFT_OUT)
    """``aggregate --eval``: the hub's claim, the same object as the package's manifest
    carries (``flsilo.signing.claims.HubEvaluation``; ``hub_kit.hubeval``)."""


@dataclass(frozen=True)
class Evaluation(JsonFields):
    """A site's signed evaluation report, archived with a round: who, which package, the
    task's primary figure (its key is the metric's name, e.g. ``accuracy``)."""

    KIND: ClassVar[Kind] = Kind.EVALUATION
    archive_round: int
    site: str
    round: int
    package_sha256: str
    report: str
    sha256: str
    task: str
    samples: int
    metric: str
    value: float | None

    def _out(self, out: dict[str, Any]) -> dict[str, Any]:
        name, value = out.pop("metric"), out.pop("value")
        return out | {name: value}

    @classmethod
    def _in(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        fixed = {f.name for f in fields(cls)} - {"metric", "value"}
        figures = [k for k in data if k not in fixed]
        if len(figures) != 1:
            raise FieldError(
                f"evaluation event: one figure expected beside its fields, {len(figures)} found",
                newer=len(figures) > 1,
            )
        (name,) = figures
        rest = {k: v for k, v in data.items() if k != name}
        return rest | {"metric": name, "value": data[name]}


HubEvent = Init | Enroll | Revoke | RotateKey | Accept | Reject | Aggregate | Evaluation
KINDS: dict[str, type[HubEvent]] = {
    cls.KIND.value: cls
    for cls in (Init, Enroll, Revoke, RotateKey, Accept, Reject, Aggregate, Evaluation)
}
assert set(KINDS) == {k.value for k in Kind}

_E = TypeVar("_E", Init, Enroll, Revoke, RotateKey, Accept, Reject, Aggregate, Evaluation)


@dataclass(frozen=True)
class Logged:
    """One checked line of the log: its place in the chain and its typed event."""

    seq: int
    time: str
    prev: str
    line_sha256: str
    body: HubEvent

    @property
    def event(self) -> Kind:
        return self.body.KIND


def of_kind(events: Sequence[Logged], kind: type[_E]) -> Iterator[tuple[Logged, _E]]:
    """The events of one kind, in the log's order, each with its line."""
    for ev in events:
        if isinstance(ev.body, kind):
            yield ev, ev.body
