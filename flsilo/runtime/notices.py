"""Notes a command leaves for the person who ran it, printed by the CLI on stderr as it ends.

For something the command did besides its task that a person should know of, e.g. that it
completed the signature of an interrupted commit. Library code calls :func:`notice`; the CLI
prints each note once (``flsilo: note: ...``) whether the command succeeded or not.
"""

from __future__ import annotations

_NOTES: list[str] = []


def notice(text: str) -> None:
    if text not in _NOTES:  # a key loaded twice in one command is noted once
        _NOTES.append(text)


def take() -> list[str]:
    """The notes left since the last call (and forget them)."""
    notes = list(_NOTES)
    _NOTES.clear()
    return notes
