"""Inbox file names the hub can keep: long names are refused unread and stored shortened.

A bundle's own name (``FEDERATION-rNNNN-SITE.safetensors``) is well under 100 bytes. A name
near the file system's 255-byte limit cannot be staged, archived or quarantined under a
prefix or suffix (``.NAME.XXXXXXXX.tmp``, ``SHA-NAME.reason.txt``): it would abort the round
before any check. So a name over :data:`MAX_NAME_BYTES` is a reject of its own
(``name-too-long``), never read, and its quarantine entry uses :func:`stored_name`: a prefix
of the name and a digest of the whole, the same on every run. The reason file records the
original name (JSON-escaped).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

MAX_NAME_BYTES = 200
"""The longest inbox file name kept as it is (bytes, as the file system counts them)."""
PREFIX_BYTES = 64


def name_bytes(name: str) -> bytes:
    return os.fsencode(name)


def name_too_long(path: Path) -> MalformedInputError | None:
    """The reject for an inbox entry whose name the hub will not keep, or None."""
    size = len(name_bytes(path.name))
    if size <= MAX_NAME_BYTES:
        return None
    return MalformedInputError(
        f"file name is {size} bytes long, more than the {MAX_NAME_BYTES} an inbox file may "
        f"have; it was not read (quarantined as {stored_name(path.name)})",
        path=path,
        code=Code.NAME_TOO_LONG,
        hint="a bundle keeps the name 'flsilo train' gave it (FEDERATION-rNNNN-SITE.safetensors); "
        "ask the site which file this is",
    )


def stored_name(name: str) -> str:
    """``name`` when it is short enough to keep; else a prefix of it plus a digest of all of it.

    The result is at most ``PREFIX_BYTES + 30`` bytes, ends in ``.safetensors`` and is the same
    for the same name on every run (so a rerun quarantines to the same place).
    """
    raw = name_bytes(name)
    if len(raw) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    head = raw[:PREFIX_BYTES].decode("utf-8", "ignore")  # whole characters only
    head = "".join(ch if ch.isprintable() else "_" for ch in head)
    return f"{head}~{digest}.safetensors"
