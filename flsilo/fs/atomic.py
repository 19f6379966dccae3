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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from flsilo.fs import filelock
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import WorkspaceError
from flsilo.runtime.faults import disk_point


def fsync_dir(path: Path) -> None:
    filelock.fsync_dir(path)


def _disk_full(exc: OSError, path: Path) -> WorkspaceError | None:
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return WorkspaceError(
        f"disk full while writing ({exc.strerror}); nothing was changed",
        path=path,
        code=Code.DISK_FULL,
        hint=f"free space on the disk holding {lasting_folder(path)} and run the command again",
    )


def lasting_folder(path: Path) -> Path:
    """The folder holding ``path`` that outlives the command: not a staging or temporary
    folder (``0001.staging/``, ``.kit.tmp/``), which a failed command removes."""
    for folder in (path.parent, *path.parent.parents):
        if not any(part.endswith((".staging", ".tmp")) for part in folder.parts):
            return folder
    return path.parent


class BackgroundSync:
    """fsync files on a background thread while the caller goes on; :meth:`join` before use.

    For a staging folder whose files count only after a later commit (a hub round): each
    file is renamed into place before its data is on disk, and :meth:`join` makes every
    file and folder durable (raising the first error, a full disk as ``disk-full``) before
    the commit. A staging folder a crash leaves behind is discarded, never trusted.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flsilo-sync")
        self._pending: list[tuple[Future[None], Path]] = []
        self._folders: dict[Path, None] = {}

    def __enter__(self) -> BackgroundSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def file(self, fd: int, path: Path) -> None:
        """Start syncing the open file ``fd`` (a duplicate is kept until it is on disk)."""
        copy = os.dup(fd)
        self._pending.append((self._pool.submit(self._sync, copy), path))

    def folder(self, path: Path) -> None:
        """Sync ``path``'s entries at :meth:`join` (after the renames into it)."""
        self._folders[path] = None

    @staticmethod
    def _sync(fd: int) -> None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def join(self) -> None:
        """Every file handed over, and every folder named, is on disk; else raise."""
        pending, self._pending = self._pending, []
        errors = [(f.exception(), path) for f, path in pending]
        for exc, path in errors:
            full = _disk_full(exc, path) if isinstance(exc, OSError) else None
            if full is not None:
                raise full from exc
            if exc is not None:
                raise exc
        folders, self._folders = list(self._folders), {}
        for folder in folders:
            if folder.is_dir():
                fsync_dir(folder)


@contextlib.contextmanager
def atomic_writer(
    path: Path, mode: int = 0o644, *, sync: BackgroundSync | None = None
) -> Iterator[BinaryIO]:
    """Yield a file that becomes ``path`` only if the block finishes; never a partial file.

    With ``sync`` the data reaches the disk in the background (see :class:`BackgroundSync`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            disk_point(path)
            if sync is None:
                os.fsync(fh.fileno())
            else:
                sync.file(fh.fileno(), path)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if sync is None:
            fsync_dir(path.parent)
        else:
            sync.folder(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        full = _disk_full(exc, path)
        if full is not None:
            raise full from exc
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


def write_bytes(
    path: Path, data: bytes, mode: int = 0o644, *, sync: BackgroundSync | None = None
) -> None:
    with atomic_writer(path, mode, sync=sync) as fh:
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
            hint = None  # the class's: check the workspace path
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                hint = (
                    f"flsilo writes in {self.path.parent}: make it writable (a read-only "
                    "mount, or the permissions of a copy), or work on a copy on a writable disk"
                )
            raise WorkspaceError(
                f"cannot open the {self.what} lock ({exc.strerror})", path=self.path, hint=hint
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
