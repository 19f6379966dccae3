"""The auditor's and the hub's second read of a file they verified earlier (``audit
--replay``'s package data, a statistics bundle's counts) goes through one descriptor opened
like every untrusted file: a file swapped after verification for a FIFO, a link or a
shorter file is refused with one line, never waited on or read short.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flsilo.fs.untrusted import read_span
from flsilo.runtime.errors import FlsiloError


def swapped(tmp_path: Path, how: str) -> Path:
    path = tmp_path / "r0001.safetensors"
    if how == "fifo":
        os.mkfifo(path)
    elif how == "link":
        (tmp_path / "secret").write_bytes(b"s" * 64)
        path.symlink_to(tmp_path / "secret")
    else:
        path.write_bytes(b"x" * 40)
    return path


@pytest.mark.parametrize(
    ("how", "code"),
    [("fifo", "not-regular-file"), ("link", "not-regular-file"), ("shorter", "too-small")],
)
def test_a_swapped_file_is_refused_not_waited_on(tmp_path: Path, how: str, code: str) -> None:
    path = swapped(tmp_path, how)
    with pytest.raises(FlsiloError) as info:
        read_span(path, 16, 48)
    assert info.value.code == code
    assert str(path) in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_the_span_is_read_exactly(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(100)))
    assert read_span(path, 10, 5) == bytes(range(10, 15))
    assert read_span(path, 0, 0) == b""
