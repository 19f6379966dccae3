"""Text from outside (file names, a manifest's strings) made safe to put on a terminal.

A name on a stick may hold ESC sequences that move the cursor or rewrite earlier lines, a
right-to-left override (U+202E) that shows ``exe.txt`` for ``txt.exe``, or bytes that are
not UTF-8. :func:`shown` writes every such character as a visible escape (``\\x1b``,
``\\u202e``); every human-readable line flsilo prints goes through it (``flsilo.cli.common``:
error lines, notes, reports and tables). JSON output is left exact: ``json.dumps`` escapes
the same characters itself.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Controls, format characters (bidi overrides, zero-width), lone surrogates (bytes that
were not UTF-8), private use, unassigned, and line or paragraph separators."""
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control, format or unassigned character escaped.

    ``newlines`` keeps line feeds (for a block of several lines); otherwise the result is
    always one line.
    """
    if text.isascii() and not _ASCII_CONTROL.search(text):
        return text
    out = []
    for ch in text:
        if ch == "\n" and newlines:
            out.append(ch)
        elif (ch.isascii() and not _ASCII_CONTROL.match(ch)) or (
            not ch.isascii() and unicodedata.category(ch) not in _UNSAFE_CATEGORIES
        ):
            out.append(ch)
        else:
            out.append(_escape(ch))
    return "".join(out)
