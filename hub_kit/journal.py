"""The pending-commit journal: how a kill between the log's append and its signature heals.

A hub commit rewrites ``events.jsonl`` (one atomic replace) and then ``events.jsonl.sig``; a
kill between the two leaves a log its signature does not cover, which every command must
refuse (it looks exactly like tampering). So, under the workspace lock and before the append,
the hub writes ``events.jsonl.pending``: the exact bytes it is about to append, the SHA-256
and size of the log they extend, and the hub's signature (``flsilo-log``) over the log as it
will be. The next command that reads the log accepts it only when the part its signature
does not cover is byte-identical to the journal's tail and the journal's signature verifies
with the hub key the log names; a command holding the lock then puts that signature in place
and says so. Anything else is refused exactly as before: lines appended by someone without
the hub key have no journal whose signature covers them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from flsilo.fs.atomic import write_bytes
from flsilo.fs.untrusted import read_bounded
from flsilo.runtime.errors import FlsiloError

JOURNAL_SCHEMA = "flsilo.pending-commit/1"
MAX_JOURNAL_BYTES = 64 * 1024 * 1024
"""A round's events for thousands of sites are a few MiB; a larger journal is not one."""


def journal_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".pending")


@dataclass(frozen=True)
class Pending:
    """A commit the hub had signed and was about to append."""

    base_sha256: str
    base_size: int
    tail: bytes
    signature: bytes

    def covers(self, raw: bytes) -> bool:
        """Whether ``raw`` is exactly the journal's base followed by its tail."""
        return (
            len(raw) == self.base_size + len(self.tail)
            and raw[self.base_size :] == self.tail
            and hashlib.sha256(raw[: self.base_size]).hexdigest() == self.base_sha256
        )

    def lines(self) -> int:
        return self.tail.count(b"\n")


def write_journal(log_path: Path, base: bytes, new: bytes, signature: bytes) -> None:
    """Record (durably) the commit that turns ``base`` into ``new``, signed by ``signature``."""
    assert new.startswith(base)
    doc = {
        "schema": JOURNAL_SCHEMA,
        "base_sha256": hashlib.sha256(base).hexdigest(),
        "base_size": len(base),
        "tail": new[len(base) :].decode("utf-8"),
        "signature": signature.decode("ascii"),
    }
    write_bytes(journal_path(log_path), (json.dumps(doc, indent=1) + "\n").encode(), mode=0o600)


def read_journal(log_path: Path) -> Pending | None:
    """The journal beside the log, or None when there is none or it is not one."""
    path = journal_path(log_path)
    if not path.exists():
        return None
    try:
        doc = json.loads(read_bounded(path, MAX_JOURNAL_BYTES))
        if doc.get("schema") != JOURNAL_SCHEMA:
            return None
        return Pending(
            base_sha256=str(doc["base_sha256"]),
            base_size=int(doc["base_size"]),
            tail=str(doc["tail"]).encode("utf-8"),
            signature=str(doc["signature"]).encode("ascii"),
        )
    except (FlsiloError, ValueError, KeyError, TypeError, AttributeError, UnicodeError):
        return None


def clear_journal(log_path: Path) -> None:
    journal_path(log_path).unlink(missing_ok=True)
