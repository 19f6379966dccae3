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


def test_a_read_only_workspace_says_make_it_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site folder on a read-only mount (tests run as root, where chmod blocks nothing)."""

    def read_only(path: object, *_args: object, **_kwargs: object) -> int:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic.os, "open", read_only)
    with pytest.raises(WorkspaceError) as caught, atomic.WorkspaceLock(tmp_path, "site workspace"):
        pass
    err = caught.value
    assert err.message == "cannot open the site workspace lock (Read-only file system)"
    assert err.path == str(tmp_path / ".lock")
    assert f"flsilo writes in {tmp_path}: make it writable" in err.hint
