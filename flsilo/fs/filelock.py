"""The operating system's advisory file lock and directory fsync: the only POSIX calls for files.

POSIX uses ``fcntl.flock`` (the kernel drops the lock when the process dies, even on
SIGKILL). On Windows, ``msvcrt.locking`` on the first byte gives the same exclusive,
non-blocking behaviour and directories cannot be fsynced (NTFS journals the rename); that
branch is written but not tested in CI (docs/reference/platforms.md).
"""

from __future__ import annotations

import os
import sys


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if another holds it."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in ``path`` durable (POSIX); a no-op where directories cannot be opened."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
