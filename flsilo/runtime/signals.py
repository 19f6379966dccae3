"""Termination signals as one exception, so cleanup runs and the CLI says what stopped.

The only module that touches :mod:`signal`. Ctrl-C (SIGINT), SIGTERM and SIGHUP raise
:class:`Interrupted`, a ``BaseException`` that no ``except Exception`` swallows and that the
CLI framework does not turn into a bare exit status. On Windows only SIGINT and SIGTERM
exist; :func:`handled` skips what the platform lacks.

A handler's exception can be lost: Python runs handlers between bytecodes, and one that
raises inside a callback whose exceptions are only printed ("Exception ignored in ...": the
at-fork hooks ``logging`` registers, which run each time a DataLoader forks its workers, or
a ``__del__``) never reaches the command. So the handler also records the signal: long loops
call :func:`check` to stop at their next step, and :func:`handled` raises it when the block
ends without it, so a signal is never dropped (the outputs a finished step wrote stay whole).
Python's "Exception ignored" note with its traceback is not printed for such a signal.
While the process forks (a DataLoader starting its workers), the handler only records: an
exception raised inside ``logging``'s at-fork hook would leave logging's lock held, and the
next log call, on the way out, would wait forever. The next :func:`check` raises it.
"""

from __future__ import annotations

import contextlib
import logging  # noqa: F401  (first: its at-fork hooks must be registered before ours)
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any


class Interrupted(BaseException):
    """A termination signal arrived; the command exits 128 + its number (130 for Ctrl-C).

    ``done`` and ``hint`` are set when the command had already made something permanent when
    it stopped (a hub round committed to the log): the CLI then says that instead of
    "nothing half-written was kept".
    """

    def __init__(self, signum: int, done: str = "", hint: str = "") -> None:
        super().__init__(signum)
        self.signum = signum
        self.done = done
        self.hint = hint


def after_done(exc: BaseException, done: str, hint: str) -> Interrupted:
    """The :class:`Interrupted` for ``exc`` (a plain ``KeyboardInterrupt`` is Ctrl-C) that
    says what the command had made permanent before it stopped."""
    return Interrupted(signal_number(exc), done, hint)


def signal_number(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)


def ctrl_c() -> Interrupted:
    """The :class:`Interrupted` a plain ``KeyboardInterrupt`` stands for (SIGINT)."""
    return Interrupted(int(signal.SIGINT))


_pending: int | None = None
"""The signal that arrived within :func:`handled` (None: none)."""


_forking = 0
"""Nonzero while os.fork runs its hooks. Ours are registered after logging's, so ours run
first before the fork and last after it, around logging's lock."""


def _fork_starts() -> None:
    global _forking
    _forking += 1


def _fork_ends() -> None:
    global _forking
    _forking = max(0, _forking - 1)


def _in_child() -> None:
    global _forking
    _forking = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_fork_starts, after_in_parent=_fork_ends, after_in_child=_in_child)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    global _pending
    _pending = signum
    if _forking:  # inside another fork hook: raised by the next check() instead
        return
    raise Interrupted(signum)


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived whose exception was lost (see above)."""
    if _pending is not None:
        raise Interrupted(_pending)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`.

    The previous handlers come back afterwards. Outside the main thread (an embedding
    application) nothing is changed.
    """
    global _pending
    _pending = None
    previous: dict[int, Any] = {}
    unraisable = sys.unraisablehook

    def quiet(info: Any) -> None:  # a lost Interrupted is raised again; no traceback for it
        if not isinstance(info.exc_value, Interrupted) and not _half_built_loader(info):
            unraisable(info)

    sys.unraisablehook = quiet
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
        lost = _pending  # the block ended normally: a signal that arrived was swallowed
    except (Interrupted, KeyboardInterrupt) as stopped:
        # the stopped frames' locals go now, while ``quiet`` is the hook: an object the
        # signal caught half built (see _half_built_loader) is freed here, not after the
        # command's one-line message, where its __del__'s complaint would be printed
        traceback.clear_frames(stopped.__traceback__)
        raise
    finally:
        _pending = None
        sys.unraisablehook = unraisable
        for number, handler in previous.items():
            signal.signal(number, handler)
    if lost is not None:
        raise Interrupted(lost)


def _half_built_loader(info: Any) -> bool:
    """torch's multi-process DataLoader iterator stopped inside its ``__init__`` (a signal
    while it makes its queues): its ``__del__`` then fails on an attribute ``__init__``
    never set. What stopped it is reported already; this is only its echo."""
    owner = getattr(info.object, "__qualname__", "")
    return (
        isinstance(info.exc_value, AttributeError)
        and owner == "_MultiProcessingDataLoaderIter.__del__"
    )


def worker_defaults(_worker_id: int = 0) -> None:
    """In a forked worker process (a DataLoader's ``worker_init_fn``): Python's own handling
    back. The worker inherits :func:`handled`'s handlers; a worker that raised
    :class:`Interrupted` when the command stops it would print a traceback as it died.
    SIGTERM and SIGHUP end it quietly; Ctrl-C raises ``KeyboardInterrupt``, which a
    DataLoader worker takes as its cue to stop. And a hand-off cut short by the stopping
    command is not printed (:func:`quiet_handoff`)."""
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.excepthook = quiet_handoff


def quiet_handoff(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """A worker's uncaught exceptions as Python prints them, except one: the thread that
    hands a batch's shared memory to the command (multiprocessing's resource sharer, which
    reports through ``sys.excepthook``) losing its peer mid-hand-off. That is the command
    stopping (a signal), and the worker is stopped next; its traceback came after the
    command's one-line message."""
    if issubclass(exc_type, (ConnectionError, EOFError)) and _in_resource_sharer(tb):
        return
    sys.__excepthook__(exc_type, exc, tb)


def _in_resource_sharer(tb: TracebackType | None) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(
            os.path.join("multiprocessing", "resource_sharer.py")
        ):
            return True
        tb = tb.tb_next
    return False


def exit_status(exc: BaseException) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + signal_number(exc)


def describe(exc: BaseException) -> str:
    signum = signal_number(exc)
    if signum == int(signal.SIGINT):
        return "interrupted (Ctrl-C)"
    return f"stopped by {signal.Signals(signum).name}"
