"""Names a careless copy gives a file: ``NAME (1).ext``, ``NAME - Copy.ext``, upper case.

A file manager that finds a name taken adds `` (1)`` or `` - Copy``; a FAT stick or a
Windows tool may show or write a name in upper case. flsilo never trusts a file by a name
it guessed: these helpers only find what to name in a hint, so that a person can rename
the file and run the command again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

COPY_MARK = re.compile(r"(?: - copy)?(?: ?\(\d+\))?(?=\.|$)")
"""`` - Copy``, `` (2)`` or ``(2)`` before an extension or at the end, in a lower-cased name."""
SCAN_LIMIT = 10_000
"""Folder entries looked at for a hint, at most (a hint is not worth a long listing)."""


def plain_name(name: str) -> str:
    """``name`` lower-cased and without the marks a copy adds."""
    return COPY_MARK.sub("", name.lower())


def renamed_signature(path: Path) -> str | None:
    """The name of a file beside ``path`` that looks like its ``.sig`` under a copy's name
    (``X.safetensors.SIG``, ``X.safetensors (1).sig``), or None. A ``.sig`` whose own file
    is there (another file's signature) is never offered."""
    wanted = plain_name(path.name + ".sig")
    try:
        with os.scandir(path.parent) as entries:
            for count, entry in enumerate(entries):
                if count >= SCAN_LIMIT:
                    return None
                name = entry.name
                if name == path.name + ".sig" or plain_name(name) != wanted:
                    continue
                own = name[: -len(".sig")] if name.lower().endswith(".sig") else None
                if own is not None and own != path.name and (path.parent / own).exists():
                    continue
                return name
    except OSError:
        return None
    return None


def miscased_bundle(name: str) -> str | None:
    """The name a bundle should have when ``name`` differs from ``*.safetensors`` only by
    case or a copy's mark after the extension (``X.SAFETENSORS``, ``X.safetensors (1)``);
    None otherwise (including a proper name)."""
    if name.endswith(".safetensors") or name.startswith("."):
        return None
    lower = plain_name(name)
    if not lower.endswith(".safetensors"):
        return None
    stem = name[: name.lower().index(".safetensors")]
    return stem + ".safetensors"


def misnamed_files(folder: Path) -> tuple[str, ...]:
    """One line per file in ``folder`` that flsilo does not read because a copy changed
    its extension (``X.SAFETENSORS``), with the name to give it (and its ``.sig``)."""
    out = []
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it)
    except OSError:
        return ()
    present = set(names)
    for name in names:
        proper = miscased_bundle(name)
        if proper in present:  # 'X.safetensors (1)': a copy made because X was there
            out.append(
                f"{name}: not read: a second copy of {proper}, which is here and is read; "
                "if it is the same file, delete this copy (and its .sig's copy)"
            )
        elif proper is not None:
            out.append(
                f"{name}: not read: flsilo reads files named *.safetensors (lower case); "
                f"if it is a bundle or package, rename it to {proper} and its .sig to "
                f"{proper}.sig"
            )
    return tuple(out)
