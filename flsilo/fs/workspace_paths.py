"""Paths a workspace records: relative when inside it, absolute when outside, so copies work."""

from __future__ import annotations

import os
from pathlib import Path


def stored_path(path: Path, root: Path) -> str:
    """The text to record for ``path`` in the workspace at ``root``.

    A path inside the workspace is recorded relative to it, so the workspace can be copied
    or moved as a whole; a path outside (a key on a token, a data share) is recorded as an
    absolute path, and each command that uses it can be given another one.
    """
    absolute = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return str(absolute)


def resolve_stored(text: str, root: Path) -> Path:
    """The path recorded as ``text`` in the workspace at ``root``, as it stands now."""
    path = Path(text)
    return path if path.is_absolute() else root / path
