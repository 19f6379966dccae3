"""Atomic writes: a full disk is one line naming the file and a folder that still exists."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from flsilo.fs import atomic
from flsilo.runtime.errors import WorkspaceError


def test_a_full_disk_names_a_folder_that_outlives_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "disk_point", full)
    staged = tmp_path / "hub" / "rounds" / "0001.staging" / "rejected" / "b.safetensors"
    with pytest.raises(WorkspaceError) as caught, atomic.atomic_writer(staged) as fh:
        fh.write(b"x")
    err = caught.value
    assert err.code == "disk-full" and err.path == str(staged)
    assert f"the disk holding {tmp_path / 'hub' / 'rounds'} and run" in err.hint
    assert list(staged.parent.iterdir()) == []  # the temporary file is gone
    kit = tmp_path / ".kit.tmp" / "federation.toml"
    with pytest.raises(WorkspaceError) as caught, atomic.atomic_writer(kit) as fh:
        fh.write(b"x")
    assert f"the disk holding {tmp_path} and run" in caught.value.hint
