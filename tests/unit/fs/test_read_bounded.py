"""read_bounded reads what the file holds, up to its bound, even when the file grew after
the size was taken, and refuses a file that grew past the bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flsilo.fs import untrusted
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError


def _grows_once_open(monkeypatch: pytest.MonkeyPatch, to: bytes) -> None:
    """The file is rewritten to ``to`` just after it is opened and its size taken."""
    opened = untrusted.open_regular

    def open_then_grow(path: Path, **options: Any) -> untrusted.Opened:
        result = opened(path, **options)
        with path.open("r+b") as fh:
            fh.write(to)
        return result

    monkeypatch.setattr(untrusted, "open_regular", open_then_grow)


@pytest.mark.parametrize("length", [0, 1, 99, 100])
def test_a_file_within_its_bound_is_read_whole(tmp_path: Path, length: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * length)
    assert untrusted.read_bounded(path, 100) == b"x" * length


@pytest.mark.parametrize("seen", [0, 10, 98])
def test_a_file_that_grew_is_read_up_to_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: int
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * seen)
    _grows_once_open(monkeypatch, bytes(range(100)))
    assert untrusted.read_bounded(path, 100) == bytes(range(100))
    path.write_bytes(b"x" * seen)
    _grows_once_open(monkeypatch, bytes(range(101)))
    with pytest.raises(MalformedInputError) as refused:
        untrusted.read_bounded(path, 100)
    assert refused.value.code == Code.TOO_LARGE and "grew beyond 100 bytes" in refused.value.message
