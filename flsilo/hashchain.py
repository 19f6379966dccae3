"""An append-only JSON-lines file where each line carries the SHA-256 of the line before.

Used for a site's own record (site_kit.record). A changed or removed line breaks the chain
at that line; ``sha256sum`` and a few lines of any language re-check it. Appends rewrite the
file atomically, so a crash leaves the old record or the new one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from flsilo.atomic import write_bytes
from flsilo.codes import Code
from flsilo.errors import VerificationError
from flsilo.manifest import now_utc
from flsilo.tensorfile import strict_json

GENESIS = "0" * 64


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def read_chain(path: Path) -> list[dict[str, Any]]:
    """Every record (with its ``seq``, ``time``, ``event``, ``prev``), the chain checked."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    records: list[dict[str, Any]] = []
    prev = GENESIS
    lines = raw.split(b"\n")
    if raw and lines[-1] != b"":
        raise _broken(path, len(lines), "last line is incomplete")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = strict_json(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _broken(path, number, f"not valid JSON ({exc})") from exc
        if not isinstance(record, dict) or record.get("seq") != number:
            raise _broken(path, number, "not a record of this file, or out of sequence")
        if record.get("prev") != prev:
            raise _broken(path, number, "hash chain broken: an earlier line was changed or removed")
        prev = hashlib.sha256(line).hexdigest()
        records.append(record)
    return records


def append_chain(path: Path, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """Append one record as one atomic replace of the file; return it."""
    records = read_chain(path)
    raw = path.read_bytes() if path.exists() else b""
    prev = hashlib.sha256(raw.split(b"\n")[-2]).hexdigest() if records else GENESIS
    record = {**data, "seq": len(records) + 1, "time": now_utc(), "event": event, "prev": prev}
    write_bytes(path, raw + _line(record) + b"\n")
    return record


def _broken(path: Path, line: int, why: str) -> VerificationError:
    return VerificationError(
        f"line {line}: {why}",
        path=path,
        code=Code.RECORD_BROKEN,
        hint="the record was edited outside flsilo; restore it from backup",
    )
