"""``SHA256SUMS`` files in the exact format ``sha256sum -c`` checks: render, parse, compare."""

from __future__ import annotations

import re
from collections.abc import Mapping

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

SUMS_FILE = "SHA256SUMS"
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def render_sums(digests: Mapping[str, str]) -> str:
    """One ``HEX  NAME`` line per file, sorted by name (names are plain file names)."""
    for name in digests:
        if "/" in name or "\n" in name or "\\" in name or not name:
            raise ValueError(f"not a plain file name: {name!r}")
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def parse_sums(text: str, *, source: str) -> dict[str, str]:
    """Parse what :func:`render_sums` writes (and ``sha256sum`` writes), strictly."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if match is None or match.group(2) in out:
            raise MalformedInputError(
                f"line {number} is not a 'SHA256  NAME' line, or repeats a name",
                path=source,
                code=Code.SUMS_MALFORMED,
                hint="SHA256SUMS is written by 'flsilo aggregate'; restore it from backup",
            )
        out[match.group(2)] = match.group(1)
    return out
