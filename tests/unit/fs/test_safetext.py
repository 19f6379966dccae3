"""Control, bidi and undecodable characters are escaped before they reach a terminal."""

from __future__ import annotations

import io
import os

import pytest
from rich.table import Table

from flsilo.cli.common import SafeConsole, error_line
from flsilo.fs.safetext import shown
from flsilo.runtime.errors import MalformedInputError


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain name.safetensors", "plain name.safetensors"),
        ("évaluation-ü.safetensors", "évaluation-ü.safetensors"),  # letters stay
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("x\u202eexe.txt", "x\\u202eexe.txt"),
        ("c1\x9b31m", "c1\\x9b31m"),
        ("bell\x07cr\rtab\t", "bell\\x07cr\\x0dtab\\x09"),
        ("line\nbreak", "line\\x0abreak"),
        ("zw\u200bj\u2066i\u2069", "zw\\u200bj\\u2066i\\u2069"),
        ("sep\u2028", "sep\\u2028"),
        (os.fsdecode(b"bytes\xff"), "bytes\\udcff"),  # not UTF-8 (surrogateescape)
    ],
)
def test_shown(raw: str, escaped: str) -> None:
    assert shown(raw) == escaped
    assert shown(raw).encode("utf-8")  # always printable as UTF-8


def test_newlines_kept_only_when_asked() -> None:
    assert shown("a\nb\x1b", newlines=True) == "a\nb\\x1b"


def test_an_error_line_stays_one_line() -> None:
    err = MalformedInputError("bad\nname\x1b[1A", path="in\rbox/x\u202e.safetensors")
    line = error_line(err)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert "\\x1b[1A" in line


def test_rich_tables_and_text_are_escaped_but_styles_kept() -> None:
    out = io.StringIO()
    console = SafeConsole(
        file=out, force_terminal=True, color_system="standard", width=100, highlight=False
    )
    table = Table()
    table.add_column("file")
    table.add_row("evil\x1b[2J\u202egpj.safetensors")
    console.print(table)
    console.print("[red]FAIL[/] name\x1b[31m")
    text = out.getvalue()
    assert "evil\\x1b[2J\\u202egpj.safetensors" in text and "name\\x1b[31m" in text
    assert "\x1b[2J" not in text and "\u202e" not in text
    assert "\x1b[31mFAIL" in text  # rich's own style codes still reach the terminal
