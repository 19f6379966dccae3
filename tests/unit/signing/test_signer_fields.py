"""An allowed_signers line splits into the same fields as the character-by-character split
it replaced: on spaces and tabs, a double-quoted run kept whole, an open quote refused."""

from __future__ import annotations

import random

import pytest

from flsilo.signing.trust import _split_fields


def reference_split(line: str) -> list[str]:
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch in " \t" and not quoted:
            if current:
                fields.append("".join(current))
                current = []
        else:
            current.append(ch)
    if quoted:
        raise ValueError("unterminated quote")
    if current:
        fields.append("".join(current))
    return fields


def outcome(split, line: str) -> object:  # type: ignore[no-untyped-def]
    try:
        return split(line)
    except ValueError as exc:
        return ("refused", str(exc))


LINES = [
    'hub namespaces="flsilo-package,flsilo-log" ssh-ed25519 AAAA flsilo hub',
    'site-a valid-after="20260101",namespaces="flsilo-bundle" ecdsa-sha2-nistp256 AAAA',
    '"a b"c\td "e\tf"',
    'a""b',
    'open "quote',
    "",
    " \t ",
    "\x0bx\u00a0y",
]


@pytest.mark.parametrize("line", LINES)
def test_lines_split_as_before(line: str) -> None:
    assert outcome(_split_fields, line) == outcome(reference_split, line)


def test_random_lines_split_as_before() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        line = "".join(rng.choice('ab "\t=,\x0b') for _ in range(rng.randint(0, 14)))
        assert outcome(_split_fields, line) == outcome(reference_split, line), repr(line)
