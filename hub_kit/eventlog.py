"""The hub's append-only, hash-chained event log (JSON lines) — and its commit point.

Each line is canonical JSON carrying ``prev``, the SHA-256 of the previous line (64 zeros
for the first); the chain itself is ``flsilo.hashchain``. The hub's state (round, packages
issued, enrolled sites) is derived from the log alone, and every multi-step operation
commits by appending its events in one atomic replace of the file, so a crash leaves either
the old log or the new one.
"""

from __future__ import annotations

from pathlib import Path

from flsilo.codes import Code
from flsilo.errors import MalformedInputError, VerificationError
from flsilo.hashchain import GENESIS, Event, HashChain
from flsilo.manifest import UPGRADE_HINT

__all__ = ["EVENTS", "GENESIS", "Event", "EventLog"]

EVENTS = (
    "init",
    "enroll",
    "revoke",
    "accept",
    "reject",
    "aggregate",
    "rotate-key",
    "evaluation",
)


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


class EventLog(HashChain):
    """``HUB/events.jsonl``: only the hub's event kinds, broken links reported as log-broken."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, kinds=EVENTS, broken=_log_broken, unknown=_log_newer)
