"""The hub's append-only, hash-chained event log (JSON lines) — and its commit point.

Each line is canonical JSON carrying ``prev``, the SHA-256 of the previous line (64 zeros
for the first); the chain itself is ``flsilo.fs.hashchain``. Each line's fields are read into
the typed event of its kind (:mod:`hub_kit.events`), which writes them back byte for byte.
The hub's state (round, packages issued, enrolled sites) is derived from the log alone
(:mod:`hub_kit.state`), and every multi-step operation commits by appending its events in
one atomic replace of the file, so a crash leaves either the old log or the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flsilo.format.manifest import UPGRADE_HINT, iso_to_epoch
from flsilo.fs.atomic import write_bytes
from flsilo.fs.hashchain import GENESIS, Event, HashChain
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError, VerificationError
from hub_kit.events import KINDS, FieldError, HubEvent, Kind, Logged

__all__ = ["EVENTS", "GENESIS", "EventLog", "Logged"]

EVENTS = tuple(k.value for k in Kind)


def _log_broken(path: Path, line: int, why: str) -> VerificationError:
    return VerificationError(
        f"event log line {line}: {why}",
        path=path,
        code=Code.LOG_BROKEN,
        hint="the log was edited outside flsilo; restore it from backup and run 'flsilo audit'",
    )


def _log_newer(path: Path, line: int, why: str) -> MalformedInputError:
    return MalformedInputError(
        f"event log line {line}: {why}", path=path, code=Code.LOG_VERSION, hint=UPGRADE_HINT
    )


def _check_time(ev: Event) -> None:
    try:
        iso_to_epoch(ev.time)
    except (TypeError, ValueError) as exc:
        raise FieldError(f"{ev.event} event: time {ev.time!r} is not a UTC time") from exc


class EventLog:
    """``HUB/events.jsonl``: only the hub's event kinds, broken links reported as log-broken,
    a kind or field a newer flsilo wrote refused with the upgrade hint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._chain = HashChain(path, kinds=EVENTS, broken=_log_broken, unknown=_log_newer)

    def read(self) -> list[Logged]:
        """Parse and check the whole log; raise at the first broken link or garbled event."""
        return self.read_raw()[1]

    def read_raw(self) -> tuple[bytes, list[Logged]]:
        """The file's bytes and its checked, typed events, from one read."""
        raw, events = self._chain.read_raw()
        return raw, [self._typed(ev) for ev in events]

    def parse(self, raw: bytes) -> list[Logged]:
        return [self._typed(ev) for ev in self._chain.parse(raw)]

    def _typed(self, ev: Event) -> Logged:
        try:
            body = KINDS[ev.event].from_json(ev.data)
            _check_time(ev)
        except FieldError as err:
            make = _log_newer if err.newer else _log_broken
            raise make(self.path, ev.seq, str(err)) from err
        return Logged(ev.seq, ev.time, ev.prev, ev.line_sha256, body)

    def append(
        self, entries: Sequence[HubEvent], *, base: tuple[bytes, list[Logged]] | None = None
    ) -> tuple[bytes, list[Logged]]:
        """Append events as one atomic step (the commit of whatever operation made them)."""
        raw, added = self.extend(entries, base=base)
        write_bytes(self.path, raw)
        return raw, added

    def extend(
        self, entries: Sequence[HubEvent], *, base: tuple[bytes, list[Logged]] | None = None
    ) -> tuple[bytes, list[Logged]]:
        """The file's bytes with ``entries`` appended, and the added events; writes nothing.

        ``base`` is the file as the caller read it (under its workspace lock); without it the
        file is read here."""
        raw, events = base if base is not None else self.read_raw()
        lines = [(e.KIND.value, e.to_json()) for e in entries]
        new, added = self._chain.extend(lines, base=(raw, events))
        return new, [
            Logged(a.seq, a.time, a.prev, a.line_sha256, body)
            for a, body in zip(added, entries, strict=True)
        ]
