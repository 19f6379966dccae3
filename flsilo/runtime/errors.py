"""The one error tree of flsilo: stable codes, exit statuses, and a hint for every failure.

Every failure a person can cause (a bad file, a wrong passphrase, a stale package) is raised
as a subclass of :class:`FlsiloError`. Each carries a stable machine-readable ``code``, a
message, the file it concerns and a hint saying what to do. Only ``flsilo.cli`` turns these
into exit statuses and printed lines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flsilo.runtime.codes import Code, ExitCode

__all__ = [
    "Code",
    "DataError",
    "ExitCode",
    "FlsiloError",
    "KeyFileError",
    "MalformedInputError",
    "PolicyError",
    "UsageError",
    "VerificationError",
    "WorkspaceError",
    "trace_code",
]

# Tests set FLSILO_TRACE_CODES to a file: every code produced is appended to it, so a test can
# prove that every registered code is produced by some test (tests/unit/runtime/test_error_codes.py).
_TRACE_CODES = os.environ.get("FLSILO_TRACE_CODES", "")


def trace_code(code: Code) -> None:
    """Record ``code`` for the coverage test when FLSILO_TRACE_CODES names a file."""
    if not _TRACE_CODES:
        return
    try:
        with open(_TRACE_CODES, "a", encoding="utf-8") as fh:
            fh.write(f"{code.value}\n")
    except OSError:
        pass


class FlsiloError(Exception):
    """Base of every expected failure: a message naming the file, a stable code and a hint."""

    default_code: Code = Code.ERROR
    default_hint: str = "rerun with --verbose for details; see docs/reference/error-codes.md"

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        hint: str | None = None,
        code: Code | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.code: Code = code or self.default_code
        self.hint = hint or self.code.own_hint or self.default_hint
        trace_code(self.code)

    @property
    def exit_code(self) -> ExitCode:
        """The exit status, fixed by the code (docs/reference/error-codes.md)."""
        return self.code.exit

    def one_line(self) -> str:
        """The single line a person sees: file, reason, hint."""
        where = f"{self.path}: " if self.path else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.message}{hint}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "path": self.path,
            "hint": self.hint,
        }

    def __str__(self) -> str:
        return self.one_line()


class UsageError(FlsiloError):
    """The command was called wrongly: missing option, contradictory arguments."""

    default_code = Code.USAGE
    default_hint = "see the command's --help for its arguments and an example"


class VerificationError(FlsiloError):
    """A well-formed file failed a trust check: signature, signer, namespace, round, chain."""

    default_code = Code.VERIFICATION_FAILED
    default_hint = "do not use this file; get a fresh, signed copy from its signer"


class MalformedInputError(FlsiloError):
    """A file is not what it claims to be: broken structure, bad manifest, unreadable data."""

    default_code = Code.MALFORMED
    default_hint = "the file is damaged or not what it claims to be; get a fresh copy"


class DataError(MalformedInputError):
    """A site's training or evaluation data cannot be used as declared by the federation."""

    default_code = Code.BAD_DATA
    default_hint = "fix the data to match the federation's classes and input shape (docs/reference/data-formats.md)"


class KeyFileError(FlsiloError):
    """A key file is missing, unreadable, of the wrong type, or its passphrase is wrong."""

    default_code = Code.KEY
    default_hint = (
        "check the key path and passphrase; keys are OpenSSH Ed25519 or ECDSA P-256 files"
    )


class WorkspaceError(FlsiloError):
    """A hub or site workspace is missing, inconsistent, locked, or cannot be written."""

    default_code = Code.WORKSPACE
    default_hint = "check the workspace path; run 'flsilo hub status' or look at the site folder"


class PolicyError(VerificationError):
    """A verified artifact is refused by hub or site policy (round, federation, rollback)."""

    default_code = Code.POLICY
