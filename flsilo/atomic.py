"""Atomic file writes (temp file, fsync, rename) and the one-writer-per-workspace lock."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flsilo import filelock
from flsilo.codes import Code
from flsilo.errors import WorkspaceError


def fsync_dir(path: Path) -> None:
    filelock.fsync_dir(path)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file that becomes ``path`` only if the block finishes; never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WorkspaceError(
                f"disk full while writing ({exc.strerror}); nothing was changed",
                path=path,
                code=Code.DISK_FULL,
                hint=f"free space on the disk holding {path.parent} and run the command again",
            ) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a hidden staging folder that becomes ``target`` only if the block finishes.

    ``target`` may exist only as an empty folder; a crash leaves at most the hidden staging
    folder, which the next attempt removes.
    """
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if target.exists():
            target.rmdir()
        staging.rename(target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    write_bytes(path, text.encode("utf-8"), mode)


def copy_file(src: Path, dst: Path) -> None:
    """Atomically copy ``src`` to ``dst`` (used for kits and quarantine; never moves)."""
    with src.open("rb") as fin, atomic_writer(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files a killed writer left behind (only flsilo's own ``.NAME.*.tmp``)."""
    if directory.is_dir():
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class WorkspaceLock:
    """An exclusive lock on a workspace; the OS drops it if the process dies.

    With ``wait_s`` > 0 a busy lock is retried for that long (one message on stderr says
    who holds it) before ``error[locked]``; with 0 it fails at once.
    """

    def __init__(self, directory: Path, what: str = "workspace", *, wait_s: float = 0) -> None:
        self.path = directory / ".lock"
        self.what = what
        self.wait_s = wait_s
        self._fd: int | None = None

    def _acquire(self, fd: int) -> bool:
        deadline = time.monotonic() + self.wait_s
        told = False
        while not filelock.try_lock(fd):
            if time.monotonic() >= deadline:
                return False
            if not told:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                print(
                    f"flsilo: waiting up to {self.wait_s:g} s for another flsilo command "
                    f"(pid {holder}) working in this {self.what}",
                    file=sys.stderr,
                )
                told = True
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return True

    def __enter__(self) -> WorkspaceLock:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WorkspaceError(
                f"cannot open the {self.what} lock ({exc.strerror})", path=self.path
            ) from exc
        if not self._acquire(self._fd):
            os.lseek(self._fd, 0, os.SEEK_SET)
            holder = os.read(self._fd, 64).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise WorkspaceError(
                f"another flsilo command (pid {holder}) is working in this {self.what}",
                path=self.path.parent,
                code=Code.LOCKED,
                hint="wait for it to finish and run this again; the lock is released "
                "automatically when it exits",
            )
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            filelock.unlock(self._fd)
            os.close(self._fd)
            self._fd = None
