"""Round archives (``rounds/NNNN/``): the ``SHA256SUMS`` that ``sha256sum -c`` checks."""

from __future__ import annotations

from pathlib import Path

from flsilo.format.artifact import sha256_file
from flsilo.fs.atomic import write_text
from flsilo.fs.untrusted import MAX_SMALL_FILE_BYTES, read_bounded
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.checksums import SUMS_FILE, parse_sums, render_sums

SHOWN = 3
"""File names a disagreement names before it counts the rest."""


def write_sums(folder: Path, known: dict[str, str]) -> None:
    """Write ``folder/SHA256SUMS`` for every file in it; ``known`` digests are not re-read."""
    digests = {
        p.name: known.get(p.name) or sha256_file(p)
        for p in folder.iterdir()
        if p.is_file() and p.name != SUMS_FILE
    }
    write_text(folder / SUMS_FILE, render_sums(digests))


def check_sums(folder: Path) -> str | None:
    """What is wrong with a round archive's SHA256SUMS, or None when every line holds."""
    sums_path = folder / SUMS_FILE
    try:
        text = read_bounded(sums_path, MAX_SMALL_FILE_BYTES).decode("utf-8")
        listed = parse_sums(text, source=str(sums_path))
    except FlsiloError as exc:
        return f"{sums_path} is missing" if exc.code == Code.MISSING else f"{sums_path}: {exc}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{sums_path}: {exc}"
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != SUMS_FILE}
    if present != set(listed):
        extra = sorted(present ^ set(listed))
        more = f" and {len(extra) - SHOWN} more" if len(extra) > SHOWN else ""
        return f"{SUMS_FILE} and the folder disagree about {', '.join(extra[:SHOWN])}{more}"
    for name, digest in sorted(listed.items()):
        if sha256_file(folder / name) != digest:
            return f"{name} does not match its line in {SUMS_FILE}"
    return None
