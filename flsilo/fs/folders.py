"""A file named where a folder is expected: said as such, not as a file that cannot be read."""

from __future__ import annotations

from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import UsageError


def require_folder(path: Path, what: str, marker: str | None = None, hint: str = "") -> None:
    """Refuse ``path`` when it exists and is not a folder (a missing one is left to the caller).

    ``what`` names the folder expected ("the site workspace"); ``marker`` is the file such a
    folder holds (``site.toml``): when the file given is that one, or sits beside one, the
    hint names its folder, the path the operator most likely meant.
    """
    if not path.exists() or path.is_dir():
        return
    if marker is not None and (path.name == marker or (path.parent / marker).is_file()):
        hint = f"did you mean its folder {path.parent}?"
    elif marker is not None:
        hint = f"give {what}'s folder, the one holding {marker}"
    raise UsageError(
        f"this is a file, not a folder (expected: {what})",
        path=path,
        code=Code.NOT_A_FOLDER,
        hint=hint or f"give {what}'s folder",
    )
