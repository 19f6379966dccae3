"""The site's own append-only, hash-chained record: what arrived, what it trained, on what.

``SITE_DIR/record.jsonl`` holds one line per event: ``package`` (a verified package arrived:
round, file, sha256), ``trained`` (the bundle written: its file and sha256, the package it
started from, a salted SHA-256 of the training records and their preprocessing, sample
counts, the options the operator chose, privacy budget spent when the plan asks for it).
``flsilo site status`` reads it; a hospital's auditor can check the chain and, holding the
data and the salt (``SITE_DIR/record.salt``), recompute the data digest: it covers the
training records of the site's index (file, frame, label and sha256 of the file's bytes,
in order) and the plan's preprocessing (``site_kit.data.samples.Samples.digest``), not the
decoded arrays. The salt keeps the digest from confirming a guess about the data to anyone
who does not hold the workspace.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from flsilo.atomic import write_text
from flsilo.hashchain import append_chain, read_chain

RECORD_FILE = "record.jsonl"
SALT_FILE = "record.salt"


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


def events(root: Path) -> list[dict[str, Any]]:
    return read_chain(root / RECORD_FILE)


def record(root: Path, event: str, data: dict[str, Any]) -> None:
    append_chain(root / RECORD_FILE, event, data)


def note_package(root: Path, round_: int, file: str, sha256: str) -> None:
    """Record a verified package once (the first time this sha256 is seen)."""
    if any(e.get("event") == "package" and e.get("sha256") == sha256 for e in events(root)):
        return
    record(root, "package", {"round": round_, "file": file, "sha256": sha256})
