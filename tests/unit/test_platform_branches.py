"""The Windows branches of the POSIX-only modules, run here with the platform faked.

No Windows machine runs the suite (docs/reference/platforms.md), so these tests take each
module's decision on this machine with what Windows lacks removed (``signal.SIGHUP``,
``os.sched_getaffinity``, ``os.O_NOFOLLOW``) or stood in for (``msvcrt``), and check the
calls and outcomes the Windows branch chooses. They cannot show that Windows itself
behaves as ``msvcrt``'s documentation says.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from pathlib import Path

import pytest

from flsilo.fs import filelock
from flsilo.fs.untrusted import open_regular
from flsilo.runtime import cpu, signals
from flsilo.runtime.errors import FlsiloError


@pytest.fixture
def windows_msvcrt(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """sys.platform is 'win32' and ``msvcrt`` records each locking call: (fd, mode, nbytes),
    refusing a second non-blocking lock on the same file as Windows does (OSError)."""
    calls: list[tuple[int, int, int]] = []
    held: set[int] = set()

    def locking(fd: int, mode: int, nbytes: int) -> None:
        calls.append((fd, mode, nbytes))
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0, "msvcrt locks from the file position"
        ino = os.fstat(fd).st_ino
        if mode == fake.LK_NBLCK:
            if ino in held:
                raise OSError(36, "Resource deadlock avoided")
            held.add(ino)
        elif mode == fake.LK_UNLCK:
            held.discard(ino)

    fake = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(sys, "platform", "win32")
    return calls


def test_windows_lock_takes_one_byte_without_waiting_and_reports_a_holder(
    windows_msvcrt, tmp_path: Path
) -> None:
    path = tmp_path / "lock"
    path.write_bytes(b"pid 1\n")
    first = os.open(path, os.O_RDWR)
    second = os.open(path, os.O_RDWR)
    try:
        os.lseek(first, 3, os.SEEK_SET)  # wherever the file position was, byte 0 is locked
        assert filelock.try_lock(first) is True
        assert filelock.try_lock(second) is False  # held: no waiting, no exception
        filelock.unlock(first)
        assert filelock.try_lock(second) is True
    finally:
        os.close(first)
        os.close(second)
    assert [(mode, n) for _fd, mode, n in windows_msvcrt] == [(2, 1), (2, 1), (0, 1), (2, 1)]


def test_windows_skips_the_directory_fsync_posix_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(FileNotFoundError):  # POSIX opens the folder to fsync it
        filelock.fsync_dir(missing)
    monkeypatch.setattr(sys, "platform", "win32")
    filelock.fsync_dir(missing)  # Windows never opens a directory


def test_without_sighup_the_other_signals_are_still_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(signal, "SIGHUP")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Interrupted) as stopped, signals.handled():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signals.exit_status(stopped.value) == 143
    assert signals.describe(stopped.value) == "stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # restored afterwards


def test_without_sched_getaffinity_the_budget_is_the_cpu_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    monkeypatch.setattr(cpu, "_cgroup_quota", lambda: None)
    assert cpu.cpu_budget() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one thread, never zero
    assert cpu.cpu_budget() == 1


def test_without_o_nofollow_a_symbolic_link_is_still_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "real.safetensors"
    target.write_bytes(b"x" * 16)
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    monkeypatch.delattr(os, "O_NOFOLLOW")
    with pytest.raises(FlsiloError) as refused:
        open_regular(link)
    assert refused.value.code == "not-regular-file"
    opened = open_regular(target)  # a regular file still opens
    opened.fh.close()
    assert opened.size == 16
