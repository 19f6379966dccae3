"""The site's own append-only, hash-chained record: what arrived, what it trained, on what.

``SITE_DIR/record.jsonl`` holds one line per event, each a typed event below: ``package`` (a
verified package arrived: round, file, sha256), ``trained`` (the bundle written: its file
and sha256, the package it started from, a salted SHA-256 of the training records and their
preprocessing, sample counts, the options the operator chose, privacy budget spent when the
plan asks for it), ``rekey`` (the site's key replaced) and ``set-data`` (its data path
changed). ``flsilo site status`` reads it; a hospital's auditor can check the chain and,
holding the data and the salt (``SITE_DIR/record.salt``), recompute the data digest: it
covers the training records of the site's index (file, frame, label and sha256 of the
file's bytes, in order) and the plan's preprocessing
(``site_kit.data.samples.Samples.digest``), not the decoded arrays. The salt keeps the
digest from confirming a guess about the data to anyone who does not hold the workspace.

Each event reads and writes its line byte for byte (:mod:`flsilo.fs.jsonfields`); a kind or a
field this flsilo does not know is a newer flsilo's (``record-version``, with the upgrade
hint), a line lacking a field or holding a mistyped one is ``record-broken``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from flsilo.format.manifest import UPGRADE_HINT
from flsilo.fs.atomic import write_text
from flsilo.fs.hashchain import Event, HashChain, record_broken
from flsilo.fs.jsonfields import LEFT_OUT, FieldError, JsonFields
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

RECORD_FILE = "record.jsonl"
SALT_FILE = "record.salt"


class RecordKind(StrEnum):
    PACKAGE = "package"
    TRAINED = "trained"
    REKEY = "rekey"
    SET_DATA = "set-data"


@dataclass(frozen=True)
class PackageArrived(JsonFields):
    """A package verified and taken into the workspace (recorded once per sha256)."""

    KIND: ClassVar[RecordKind] = RecordKind.PACKAGE
    round: int
    file: str
    sha256: str


@dataclass(frozen=True)
class Spent(JsonFields):
    """The privacy a DP round spent, and the total after it."""

    epsilon_round: float
    epsilon_total: float
    delta: float


@dataclass(frozen=True)
class Trained(JsonFields):
    """A round trained: the bundle written, the package, the data digest and counts."""

    KIND: ClassVar[RecordKind] = RecordKind.TRAINED
    round: int
    package_sha256: str
    bundle: str
    bundle_sha256: str
    data_sha256_salted: str
    train_samples: int
    val_samples: int
    skipped: int
    overrides: Mapping[str, Any]
    """The options the operator chose beyond the workspace's defaults (``data``, ``device``...)."""
    privacy_budget_spent: Spent | None


@dataclass(frozen=True)
class Rekeyed(JsonFields):
    """The site's key replaced by the one the hub enrolled in its place."""

    KIND: ClassVar[RecordKind] = RecordKind.REKEY
    old_key: str
    new_key: str
    checked_against_kit: str | None
    """The kit the new key was checked against (its path); null: no kit was given."""
    old_site_key: str | None = field(default=None, metadata=LEFT_OUT)
    """The old public key (OpenSSH line), so status still recognises bundles it signed."""


@dataclass(frozen=True)
class DataChanged(JsonFields):
    """The workspace's data path (and format) changed with ``flsilo site set-data``."""

    KIND: ClassVar[RecordKind] = RecordKind.SET_DATA
    old_data: str | None
    old_format: str | None
    data: str
    data_format: str | None


RecordEvent = PackageArrived | Trained | Rekeyed | DataChanged
KINDS: dict[str, type[RecordEvent]] = {
    cls.KIND.value: cls for cls in (PackageArrived, Trained, Rekeyed, DataChanged)
}
_E = TypeVar("_E", PackageArrived, Trained, Rekeyed, DataChanged)


@dataclass(frozen=True)
class Recorded:
    """One checked line of the record: its place in the chain and its typed event."""

    seq: int
    time: str
    prev: str
    body: RecordEvent

    def record(self) -> dict[str, Any]:
        """The line as it was written: the event's fields plus the chain fields."""
        chain = {"seq": self.seq, "time": self.time, "event": self.body.KIND.value}
        return self.body.to_json() | chain | {"prev": self.prev}


def of_kind(entries: Sequence[Recorded], kind: type[_E]) -> Iterator[_E]:
    for entry in entries:
        if isinstance(entry.body, kind):
            yield entry.body


def _newer(path: Path, line: int, why: str) -> MalformedInputError:
    return MalformedInputError(
        f"line {line}: {why}", path=path, code=Code.RECORD_VERSION, hint=UPGRADE_HINT
    )


def _chain(root: Path) -> HashChain:
    return HashChain(root / RECORD_FILE, kinds=tuple(KINDS), broken=record_broken, unknown=_newer)


def _typed(path: Path, ev: Event) -> Recorded:
    try:
        body = KINDS[ev.event].from_json(ev.data)
    except FieldError as err:
        raise (_newer if err.newer else record_broken)(path, ev.seq, str(err)) from err
    return Recorded(ev.seq, ev.time, ev.prev, body)


def _salt(root: Path) -> bytes:
    path = root / SALT_FILE
    if not path.exists():
        write_text(path, secrets.token_hex(32) + "\n", mode=0o600)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def data_digest(root: Path, samples_digest: str) -> str:
    """sha256(salt || the training samples' digest as hex text), hex."""
    digest = hashlib.sha256(_salt(root))
    digest.update(samples_digest.encode("ascii"))
    return digest.hexdigest()


def events(root: Path) -> list[Recorded]:
    """Every line of the record, checked and typed, oldest first."""
    chain = _chain(root)
    return [_typed(chain.path, ev) for ev in chain.read()]


def record(root: Path, event: RecordEvent) -> None:
    """Append one event as one atomic replace of the file."""
    _chain(root).append([(event.KIND.value, event.to_json())])


def note_package(root: Path, round_: int, file: str, sha256: str) -> None:
    """Record a verified package once (the first time this sha256 is seen)."""
    if any(p.sha256 == sha256 for p in of_kind(events(root), PackageArrived)):
        return
    record(root, PackageArrived(round=round_, file=file, sha256=sha256))
