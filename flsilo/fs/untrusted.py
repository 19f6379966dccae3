"""Open untrusted files once: no symlinks, no FIFOs or devices, sizes bounded before reading.

A file carried on a stick may be a symlink to a secret, a FIFO that never ends, a device
such as ``/dev/zero`` or a multi-gigabyte blob. :func:`open_regular` opens it with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block the open), checks on the opened descriptor
that it is a regular file and that its size is plausible, and hands back that descriptor:
every later read goes through it, never through the path again.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

MAX_SIGNATURE_BYTES = 16 * 1024
"""An SSHSIG file for an Ed25519 or ECDSA key is under 1 KiB; anything above this is refused."""
MAX_SMALL_FILE_BYTES = 4 * 1024 * 1024
"""A small untrusted text file (a SHA256SUMS list, a sigstore bundle, a key chain)."""


class UnreadableError(MalformedInputError):
    """A file exists but cannot be opened or read (permissions, I/O error)."""

    default_code = Code.UNREADABLE
    default_hint = "check the file's permissions and the medium it is on; copy it again"


@dataclass(frozen=True)
class Opened:
    """A regular file opened for reading, with the size ``fstat`` reported on the descriptor."""

    fh: io.BufferedIOBase
    size: int
    path: Path


def open_regular(
    path: Path, *, max_size: int | None = None, min_size: int = 0, follow: bool = False
) -> Opened:
    """Open ``path`` read-only without following a final symlink and check it on the descriptor.

    ``follow`` lets a final symlink through (a path the user named, e.g. a key file); what it
    leads to must still be a regular file of a plausible size.

    Raises MalformedInputError ``missing``, ``not-regular-file`` or ``too-large``/``too-small``,
    or UnreadableError ``unreadable``; nothing is read from the file here.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    nofollow = 0 if follow else getattr(os, "O_NOFOLLOW", 0)  # POSIX only
    flags |= nofollow | getattr(os, "O_NONBLOCK", 0)
    if (
        not nofollow and not follow
    ):  # Windows: no O_NOFOLLOW, so refuse a link seen just before opening
        _refuse_link(path)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise MalformedInputError(
            "file not found", path=path, code=Code.MISSING, hint="check the path"
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise not_regular(path, "a symbolic link") from exc
        raise UnreadableError(f"cannot open the file ({exc.strerror})", path=path) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_regular(path, describe_mode(info.st_mode))
        if max_size is not None and info.st_size > max_size:
            raise MalformedInputError(
                f"file is {info.st_size} bytes, more than the {max_size} this file can hold",
                path=path,
                code=Code.TOO_LARGE,
                hint="this is not the file it is named as; do not use it",
            )
        if info.st_size < min_size:
            raise MalformedInputError(
                f"file is {info.st_size} bytes, less than the {min_size} this file must hold",
                path=path,
                code=Code.TOO_SMALL,
                hint="the file is truncated or not the file it is named as; copy it again",
            )
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return Opened(fh, info.st_size, path)


def _refuse_link(path: Path) -> None:
    """Where ``open`` cannot refuse a symbolic link itself, ``lstat`` just before it."""
    try:
        info = os.lstat(path)
    except OSError:
        return  # the open that follows reports a missing or unreadable file
    if stat.S_ISLNK(info.st_mode):
        raise not_regular(path, "a symbolic link")


def not_regular(path: Path, what: str) -> MalformedInputError:
    return MalformedInputError(
        f"not a regular file but {what}; it was not read",
        path=path,
        code=Code.NOT_REGULAR_FILE,
        hint="copy the real file (not a link, FIFO or device) onto the medium",
    )


def describe_mode(mode: int) -> str:
    """A few words for what a non-regular directory entry is."""
    for test, words in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return words
    return "a special file"


def read_bounded(path: Path, max_size: int, *, follow: bool = False) -> bytes:
    """The whole of a small regular file, refused from ``fstat`` alone when over ``max_size``."""
    opened = open_regular(path, max_size=max_size, follow=follow)
    with opened.fh:
        try:
            # What fstat said, and one byte more to see growth: asking for max_size + 1 at
            # once would make a buffer of that size for a file of a few hundred bytes.
            want = min(opened.size, max_size) + 1
            data = opened.fh.read(want)
            if len(data) == want and want <= max_size:  # it grew: read on, up to the bound
                data += opened.fh.read(max_size + 1 - want)
        except OSError as exc:
            raise UnreadableError(f"cannot read the file ({exc.strerror})", path=path) from exc
    if len(data) > max_size:
        raise MalformedInputError(
            f"file grew beyond {max_size} bytes while it was read",
            path=path,
            code=Code.TOO_LARGE,
            hint="do not modify files while flsilo reads them",
        )
    return data


def read_span(path: Path, start: int, size: int) -> bytes:
    """``size`` bytes at ``start`` of a regular file verified earlier, read through one descriptor.

    A file swapped after its verification for a link, a FIFO or a shorter file is refused
    (``not-regular-file``, ``too-small``), never waited on or read short.
    """
    opened = open_regular(path, min_size=start + size)
    with opened.fh:
        try:
            opened.fh.seek(start)
            data = opened.fh.read(size)
        except OSError as exc:
            raise UnreadableError(f"cannot read the file ({exc.strerror})", path=path) from exc
    if len(data) != size:
        raise MalformedInputError(
            f"file shrank while it was read ({len(data)} of {size} bytes at offset {start})",
            path=path,
            code=Code.TOO_SMALL,
            hint="something changed the file after it was verified; verify it again",
        )
    return data


def read_signature_file(sig_file: Path) -> bytes | None:
    """The exact bytes of a signature file, or None when there is none.

    Every signature flsilo reads (bundles, packages, release officers, the log, the
    wheelhouse) comes through here: a link, FIFO or device (``/dev/zero``) is refused
    ``not-regular-file`` and a file over :data:`MAX_SIGNATURE_BYTES` ``signature-too-large``,
    both from ``fstat`` before a byte is read.
    """
    try:
        return read_bounded(sig_file, MAX_SIGNATURE_BYTES)
    except MalformedInputError as exc:
        if exc.code == Code.MISSING:
            return None
        if exc.code == Code.TOO_LARGE:
            raise MalformedInputError(
                f"signature file is larger than {MAX_SIGNATURE_BYTES} bytes; it was not read",
                path=sig_file,
                code=Code.SIGNATURE_TOO_LARGE,
                hint="an SSH signature is under 1 KiB; this is not one, get a fresh copy",
            ) from exc
        raise
