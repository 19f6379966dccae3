"""Append-only JSON-lines files where each line carries the SHA-256 of the line before.

The one implementation behind the hub's event log (``hub_kit.eventlog``) and a site's own
record (``site_kit.record``). Each line is canonical JSON with ``seq``, ``time``, ``event``
and ``prev`` (64 zeros for the first line). A changed or removed line breaks the chain at
that line; ``sha256sum`` and a few lines of any language re-check it. An append rewrites the
file in one atomic replace, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flsilo.format.manifest import now_utc
from flsilo.format.tensorfile import strict_json
from flsilo.fs.atomic import write_bytes
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import VerificationError

GENESIS = "0" * 64

Broken = Callable[[Path, int, str], VerificationError]


class Chained(Protocol):
    """A line already in the chain, as :meth:`HashChain.extend` needs it: its digest."""

    @property
    def line_sha256(self) -> str: ...


@dataclass(frozen=True)
class Event:
    """One checked line: its chain fields, its own data, and the SHA-256 of the line."""

    seq: int
    time: str
    event: str
    prev: str
    data: dict[str, Any]
    line_sha256: str


def canonical_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def record_broken(path: Path, line: int, why: str) -> VerificationError:
    return VerificationError(
        f"line {line}: {why}",
        path=path,
        code=Code.RECORD_BROKEN,
        hint="the record was edited outside flsilo; restore it from backup",
    )


class HashChain:
    """A hash-chained JSON-lines file; ``kinds`` limits the event names it may hold."""

    def __init__(
        self,
        path: Path,
        *,
        kinds: tuple[str, ...] | None = None,
        broken: Broken = record_broken,
        unknown: Callable[[Path, int, str], Exception] | None = None,
    ) -> None:
        self.path = path
        self.kinds = kinds
        self.broken = broken
        self.unknown = unknown
        """Raised for a well-linked line of a kind not in ``kinds`` (a newer writer's)."""

    def read(self) -> list[Event]:
        """Parse and check the whole chain; raise VerificationError at the first broken link."""
        return self.read_raw()[1]

    def read_raw(self) -> tuple[bytes, list[Event]]:
        """The file's bytes and its checked events, from one read."""
        if not self.path.exists():
            return b"", []
        raw = self.path.read_bytes()
        return raw, self.parse(raw)

    def parse(self, raw: bytes) -> list[Event]:
        events: list[Event] = []
        prev = GENESIS
        if raw and not raw.endswith(b"\n"):
            raise self.broken(self.path, len(raw.split(b"\n")), "last line is incomplete")
        for number, line in enumerate(raw.split(b"\n")[:-1] if raw else [], start=1):
            try:
                record = strict_json(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                seq, when, kind, link = (
                    record.pop("seq"),
                    record.pop("time"),
                    record.pop("event"),
                    record.pop("prev"),
                )
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                raise self.broken(self.path, number, f"not a valid line ({exc})") from exc
            known = self.kinds is None or kind in self.kinds
            if (not known and self.unknown is None) or seq != number:
                raise self.broken(
                    self.path, number, f"unexpected event {kind!r} or sequence {seq!r}"
                )
            if link != prev:
                raise self.broken(
                    self.path, number, "hash chain broken: an earlier line was changed or removed"
                )
            if not known and self.unknown is not None:
                raise self.unknown(
                    self.path, number, f"event {kind!r} is not one this flsilo knows"
                )
            digest = hashlib.sha256(line).hexdigest()
            events.append(Event(seq, when, kind, link, record, digest))
            prev = digest
        return events

    def append(
        self,
        entries: list[tuple[str, dict[str, Any]]],
        *,
        base: tuple[bytes, list[Event]] | None = None,
    ) -> tuple[bytes, list[Event]]:
        """Append events as one atomic step (the commit of whatever operation made them).

        ``base`` is the file as the caller read it (under its workspace lock); without it the
        file is read here. Returns the new bytes and the added events.
        """
        raw, added = self.extend(entries, base=base)
        write_bytes(self.path, raw)
        return raw, added

    def extend(
        self,
        entries: list[tuple[str, dict[str, Any]]],
        *,
        base: tuple[bytes, Sequence[Chained]] | None = None,
    ) -> tuple[bytes, list[Event]]:
        """The file's bytes with ``entries`` appended, and the added events; writes nothing."""
        raw, events = base if base is not None else self.read_raw()
        prev = events[-1].line_sha256 if events else GENESIS
        when = now_utc()
        added: list[Event] = []
        for kind, data in entries:
            assert self.kinds is None or kind in self.kinds
            record = {
                **data,
                "seq": len(events) + len(added) + 1,
                "time": when,
                "event": kind,
                "prev": prev,
            }
            line = canonical_line(record)
            prev = hashlib.sha256(line).hexdigest()
            raw += line + b"\n"
            added.append(Event(record["seq"], when, kind, record["prev"], data, prev))
        return raw, added
