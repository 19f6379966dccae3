"""The hub's event kinds, typed: one frozen dataclass per kind, each with its JSON form.

A line of ``events.jsonl`` is the event's own fields plus the chain fields (``seq``,
``time``, ``event``, ``prev``, added by :mod:`flsilo.hashchain`), as canonical JSON with
sorted keys. ``to_json`` gives exactly the fields the hub has always written, and
``from_json`` refuses anything it would not write back byte for byte: a missing or
mistyped field (an edited log), or a field this flsilo does not know (a newer flsilo wrote
it: the upgrade hint, as for an unknown kind).

Optional fields are of two sorts, as the log has always had them: ``LEFT_OUT`` fields
are left out of the line when unset (a rekey's ``replaces``, a DP bundle's privacy
figures, a round's gates), the others are always written, ``null`` when unset (an
aggregate's ``server_state``).
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

_OMIT = "omit"
LEFT_OUT = {_OMIT: True}
"""Field metadata: the field is left out of the JSON while it is ``None`` (``False`` for a flag)."""


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


class FieldError(ValueError):
    """A well-chained line whose fields are not an event of its kind as flsilo writes it."""

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer
        """True for a field this flsilo does not know (a newer writer's)."""


class _Json:
    """``to_json`` and ``from_json`` from the dataclass's fields and their annotations."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get(_OMIT) and (value is None or value is False):
                continue
            out[f.name] = value.to_json() if isinstance(value, _Json) else value
        return self._out(out)

    def _out(self, out: dict[str, Any]) -> dict[str, Any]:
        """The JSON object from the fields' (a kind whose keys are not its fields changes it)."""
        return out

    @classmethod
    def _in(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The fields' values from the JSON object: the inverse of :meth:`_out`."""
        return dict(data)

    @classmethod
    def from_json(cls: type[_J], data: Mapping[str, Any]) -> _J:
        what = f"{getattr(cls, 'KIND', 'metrics')} event"
        if not isinstance(data, Mapping):
            raise FieldError(f"{what}: not a JSON object")
        original, data = dict(data), cls._in(data)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise FieldError(
                f"{what}: field {unknown[0]!r} is not one this flsilo knows", newer=True
            )
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                values[f.name] = _typed(hints[f.name], data[f.name], f"{what}: {f.name!r}")
            elif not f.metadata.get(_OMIT):
                raise FieldError(f"{what}: field {f.name!r} is missing")
        made = cls(**values)
        if made.to_json() != original:  # e.g. null where the log leaves a field out
            raise FieldError(f"{what}: its fields are not as flsilo writes them")
        return made


_J = TypeVar("_J", bound=_Json)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The class's field types, resolved once."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` if it is of the JSON type ``hint`` names (nested events made), else refused."""
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if isinstance(hint, type) and is_dataclass(hint) and issubclass(hint, _Json):
        return hint.from_json(value) if isinstance(value, dict) else _wrong(where, "an object")
    checks: dict[Any, tuple[type | tuple[type, ...], str]] = {
        str: (str, "a string"),
        int: (int, "an integer"),
        float: ((int, float), "a number"),
        bool: (bool, "true or false"),
    }
    if hint in checks:
        kinds, words = checks[hint]
        if isinstance(value, kinds) and (hint is bool or not isinstance(value, bool)):
            return value
        return _wrong(where, words)
    if get_origin(hint) in (Mapping, dict) or hint is dict:
        return value if isinstance(value, dict) else _wrong(where, "an object")
    raise AssertionError(f"no JSON type for {hint!r}")


def _wrong(where: str, expected: str) -> Any:
    raise FieldError(f"{where} is not {expected}")


@dataclass(frozen=True)
class Init(_Json):
    """The federation's start: its round-0 package and the hub key (``hub init``)."""

    KIND: ClassVar[Kind] = Kind.INIT
    federation: str
    package: str
    sha256: str
    hub_key: str
    round: int = 0
    start: Mapping[str, Any] | None = field(default=None, metadata=LEFT_OUT)
    """The provenance of a ``backbone import`` start file, when the weights came from one."""


@dataclass(frozen=True)
class Enroll(_Json):
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
class Revoke(_Json):
    """A site's key is no longer trusted from this point of the log on."""

    KIND: ClassVar[Kind] = Kind.REVOKE
    site: str
    valid_before: int
    """The last second the key stays valid, as written into ``allowed_signers``."""


@dataclass(frozen=True)
class RotateKey(_Json):
    """The hub key rotated: the statement signed by the old and the new key."""

    KIND: ClassVar[Kind] = Kind.ROTATE_KEY
    statement: str
    old_signature: str
    new_signature: str
    hub_key: str
    fingerprint: str


@dataclass(frozen=True)
class ReportedMetrics(_Json):
    """What a site said about a model on its validation split (in its bundle's manifest)."""

    accuracy: float | None
    loss: float | None
    samples: int | None


@dataclass(frozen=True)
class Accept(_Json):
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
class Reject(_Json):
    """A file refused at intake, with the error code and message it got."""

    KIND: ClassVar[Kind] = Kind.REJECT
    round: int
    site: str
    sha256: str
    file: str
    code: str
    reason: str


@dataclass(frozen=True)
class Aggregate(_Json):
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


@dataclass(frozen=True)
class Evaluation(_Json):
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
