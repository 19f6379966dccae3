"""The one error tree of flsilo: stable codes, exit statuses, and a hint for every failure.

Every failure a person can cause (a bad file, a wrong passphrase, a stale package) is raised
as a subclass of :class:`FlsiloError`. Each carries a stable machine-readable ``code``, a
message, the file it concerns and a hint saying what to do. Only ``flsilo.cli`` turns these
into exit statuses and printed lines.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import Any


class ExitCode(IntEnum):
    """Exit statuses of the ``flsilo`` command, documented in docs/reference/exit-codes.md."""

    OK = 0
    ERROR = 1
    USAGE = 2
    VERIFICATION_FAILED = 3
    MALFORMED_INPUT = 4
    INTERRUPTED = 130
    TERMINATED = 143
    """SIGTERM, handled like Ctrl-C (flsilo.signals; 128 + the signal number)."""


class FlsiloError(Exception):
    """Base of every expected failure: a message naming the file, a stable code and a hint."""

    exit_code: ExitCode = ExitCode.ERROR
    default_code: str = "error"
    default_hint: str = "rerun with --verbose for details; see docs/reference/exit-codes.md"

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.hint = hint or self.default_hint
        self.code = code or self.default_code

    def one_line(self) -> str:
        """The single line a person sees: file, reason, hint."""
        where = f"{self.path}: " if self.path else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.message}{hint}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "path": self.path,
            "hint": self.hint,
        }

    def __str__(self) -> str:
        return self.one_line()


class UsageError(FlsiloError):
    """The command was called wrongly: missing option, contradictory arguments."""

    exit_code = ExitCode.USAGE
    default_code = "usage"
    default_hint = "see the command's --help for its arguments and an example"


class VerificationError(FlsiloError):
    """A well-formed file failed a trust check: signature, signer, namespace, round, chain."""

    exit_code = ExitCode.VERIFICATION_FAILED
    default_code = "verification-failed"
    default_hint = "do not use this file; get a fresh, signed copy from its signer"


class MalformedInputError(FlsiloError):
    """A file is not what it claims to be: broken structure, bad manifest, unreadable data."""

    exit_code = ExitCode.MALFORMED_INPUT
    default_code = "malformed"
    default_hint = "the file is damaged or not what it claims to be; get a fresh copy"


class DataError(MalformedInputError):
    """A site's training or evaluation data cannot be used as declared by the federation."""

    default_code = "bad-data"
    default_hint = "fix the data to match the federation's classes and input shape (docs/reference/data-formats.md)"


class KeyFileError(FlsiloError):
    """A key file is missing, unreadable, of the wrong type, or its passphrase is wrong."""

    default_code = "key"
    default_hint = (
        "check the key path and passphrase; keys are OpenSSH Ed25519 or ECDSA P-256 files"
    )


class WorkspaceError(FlsiloError):
    """A hub or site workspace is missing, inconsistent, locked, or cannot be written."""

    default_code = "workspace"
    default_hint = "check the workspace path; run 'flsilo hub status' or look at the site folder"


class PolicyError(VerificationError):
    """A verified artifact is refused by hub or site policy (round, federation, rollback)."""

    default_code = "policy"
