"""The hub's append-only, hash-chained event log (JSON lines) — and its commit point.

Each line is canonical JSON carrying ``prev``, the SHA-256 of the previous line (64 zeros
for the first). The hub's state (round, packages issued, enrolled sites) is derived from the
log alone, and every multi-step operation commits by appending its events in one atomic
replace of the file, so a crash leaves either the old log or the new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flsilo.atomic import write_bytes
from flsilo.codes import Code
from flsilo.errors import VerificationError
from flsilo.manifest import now_utc
from flsilo.tensorfile import strict_json

GENESIS = "0" * 64
EVENTS = ("init", "enroll", "revoke", "accept", "reject", "aggregate", "rotate-key")


@dataclass(frozen=True)
class Event:
    seq: int
    time: str
    event: str
    prev: str
    data: dict[str, Any]
    line_sha256: str

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Event]:
        """Parse and check the whole chain; raise VerificationError at the first broken link."""
        return self.read_raw()[1]

    def read_raw(self) -> tuple[bytes, list[Event]]:
        """The log's bytes and its checked events, from one read."""
        if not self.path.exists():
            return b"", []
        raw = self.path.read_bytes()
        return raw, self.parse(raw)

    def parse(self, raw: bytes) -> list[Event]:
        events: list[Event] = []
        prev = GENESIS
        if raw and not raw.endswith(b"\n"):
            raise self._broken(len(raw.split(b"\n")), "last line is incomplete")
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
                raise self._broken(number, f"not a valid event ({exc})") from exc
            if kind not in EVENTS or seq != number:
                raise self._broken(number, f"unexpected event {kind!r} or sequence {seq!r}")
            if link != prev:
                raise self._broken(
                    number, "hash chain broken: an earlier line was changed or removed"
                )
            digest = hashlib.sha256(line).hexdigest()
            events.append(Event(seq, when, kind, link, record, digest))
            prev = digest
        return events

    def _broken(self, line: int, why: str) -> VerificationError:
        return VerificationError(
            f"event log line {line}: {why}",
            path=self.path,
            code=Code.LOG_BROKEN,
            hint="the log was edited outside flsilo; restore it from backup and run 'flsilo audit'",
        )

    def append(
        self,
        entries: list[tuple[str, dict[str, Any]]],
        *,
        base: tuple[bytes, list[Event]] | None = None,
    ) -> tuple[bytes, list[Event]]:
        """Append events as one atomic step (the commit of whatever operation made them).

        ``base`` is the log as the caller read it under the workspace lock (bytes and
        events); without it the log is read here. Returns the new bytes and the added events.
        """
        raw, events = base if base is not None else self.read_raw()
        prev = events[-1].line_sha256 if events else GENESIS
        when = now_utc()
        added: list[Event] = []
        for kind, data in entries:
            assert kind in EVENTS
            record = {
                **data,
                "seq": len(events) + len(added) + 1,
                "time": when,
                "event": kind,
                "prev": prev,
            }
            line = _line(record)
            prev = hashlib.sha256(line).hexdigest()
            raw += line + b"\n"
            added.append(Event(record["seq"], when, kind, record["prev"], data, prev))
        write_bytes(self.path, raw)
        return raw, added
