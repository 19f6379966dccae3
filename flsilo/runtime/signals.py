"""Termination signals as one exception, so cleanup runs and the CLI says what stopped.

The only module that touches :mod:`signal`. Ctrl-C (SIGINT), SIGTERM and SIGHUP raise
:class:`Interrupted`, a ``BaseException`` that no ``except Exception`` swallows and that the
CLI framework does not turn into a bare exit status. On Windows only SIGINT and SIGTERM
exist; :func:`install` skips what the platform lacks.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any


class Interrupted(BaseException):
    """A termination signal arrived; the command exits 128 + its number (130 for Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def ctrl_c() -> Interrupted:
    """The :class:`Interrupted` a plain ``KeyboardInterrupt`` stands for (SIGINT)."""
    return Interrupted(int(signal.SIGINT))


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`.

    The previous handlers come back afterwards. Outside the main thread (an embedding
    application) nothing is changed.
    """
    previous: dict[int, Any] = {}
    try:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)
            if number is None:
                continue
            try:
                previous[number] = signal.signal(number, _raise_interrupted)
            except ValueError:
                break
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def exit_status(exc: BaseException) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + exc.signum if isinstance(exc, Interrupted) else 128 + int(signal.SIGINT)


def describe(exc: BaseException) -> str:
    signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
    if signum == int(signal.SIGINT):
        return "interrupted (Ctrl-C)"
    return f"stopped by {signal.Signals(signum).name}"
