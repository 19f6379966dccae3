"""Progress of long work: the library reports it, the command line decides how to show it.

As with :mod:`logging`, code that reads many bytes says what it is doing and nothing is shown
unless the command line installed a :class:`Display` (:func:`showing`): never with
``--json``, never on stdout, never in a library caller. A stage is one kind of work with a
known size (``verifying 8 bundles, 2.0 GiB``); it counts units (bundles, files) and bytes.
Bytes are reported where they are read (:mod:`flsilo.format.readpass`, the hub's streaming
passes), units where the caller's loop is (:func:`unit`).

Reporting costs a lock and a clock read per chunk read (chunks are MiB), and the display is
asked to redraw at most every :attr:`Display.interval` seconds: the work does not slow down
to be watched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol


def counted(n: int, unit: str) -> str:
    """``1 file``, ``2 files``: ``unit`` is the plural."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


@dataclass(frozen=True)
class Snapshot:
    """How far one stage is: what the display draws."""

    label: str
    """What the stage does, e.g. ``verifying``."""
    unit: str
    """What it counts, e.g. ``bundles``; '' when it counts only bytes."""
    units_done: int
    units: int
    bytes_done: int
    total_bytes: int
    elapsed: float
    depth: int = 0
    """0 for the outermost stage; a nested stage (replay inside audit) is deeper."""
    finished: bool = False

    @property
    def sized(self) -> bool:
        """Whether the stage knows how much work it is (one sized later waits to be shown)."""
        return bool(self.total_bytes or self.units)

    @property
    def rate(self) -> float:
        """Bytes per second so far (0 until a byte and a moment have passed)."""
        return self.bytes_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def left(self) -> float | None:
        """Seconds left at the rate so far, None until it can be told."""
        if self.rate <= 0 or self.elapsed < 0.2:
            return None
        return max(0.0, self.total_bytes - self.bytes_done) / self.rate


class Display(Protocol):
    """Where snapshots go (the command line's terminal line or plain lines)."""

    interval: float
    """Seconds between redraws while bytes flow (a stage's start and end always show)."""

    def show(self, snapshot: Snapshot) -> None: ...


@dataclass
class _Stage:
    label: str
    unit: str
    units: int
    total_bytes: int
    depth: int
    started: float = field(default_factory=time.monotonic)
    units_done: int = 0
    bytes_done: int = 0
    shown_at: float = field(default_factory=time.monotonic)
    """When it was last shown (its start is)."""

    def snapshot(self, finished: bool = False) -> Snapshot:
        return Snapshot(
            self.label,
            self.unit,
            min(self.units_done, self.units),
            self.units,
            min(self.bytes_done, self.total_bytes) if self.total_bytes else self.bytes_done,
            self.total_bytes,
            time.monotonic() - self.started,
            self.depth,
            finished,
        )


_display: Display | None = None
_stages: list[_Stage] = []
_lock = threading.Lock()
"""Guards the stages and their counts."""
_drawing = threading.Lock()
"""One redraw at a time; a thread that finds one under way skips its own."""
_local = threading.local()


@contextmanager
def showing(display: Display | None) -> Iterator[None]:
    """Show every stage that runs inside this block on ``display`` (None: show nothing)."""
    global _display
    previous = _display
    _display = display
    try:
        yield
    finally:
        _display = previous


@contextmanager
def stage(label: str, *, total_bytes: int, unit: str = "", units: int = 0) -> Iterator[None]:
    """One stage of work of ``total_bytes`` (and ``units`` of ``unit``), shown while it runs."""
    display = _display
    if display is None:
        yield
        return
    with _lock:
        current = _Stage(label, unit, units, total_bytes, len(_stages))
        _stages.append(current)
    with _drawing:
        display.show(current.snapshot())
    try:
        yield
    finally:
        with _lock:
            _stages.remove(current)
        with _drawing:
            display.show(current.snapshot(finished=True))


def expect(*, units: int, total_bytes: int) -> None:
    """The current stage's size, once the work inside it knows it (its count starts now)."""
    display = _display
    with _lock:
        if display is None or not _stages:
            return
        current = _stages[-1]
        current.units, current.total_bytes = units, total_bytes
        current.units_done = current.bytes_done = 0
        current.started = current.shown_at = time.monotonic()
        snapshot = current.snapshot()
    with _drawing:
        display.show(snapshot)


@contextmanager
def unit(size: int) -> Iterator[None]:
    """One unit of the current stage (a bundle, a file) of ``size`` bytes, read on this
    thread; what it did not read (a file refused early) counts as done when it ends."""
    if _display is None or not _stages or getattr(_local, "read", None) is not None:
        yield
        return
    _local.read = 0
    try:
        yield
    finally:
        unread = max(0, size - _local.read)
        _local.read = None
        with _lock:
            if _stages:
                _stages[-1].units_done += 1
                _stages[-1].bytes_done += unread
        _redraw()


def advance(nbytes: int) -> None:
    """``nbytes`` more were read for the current stage (called per chunk, from any thread)."""
    if _display is None or not _stages:
        return
    if getattr(_local, "read", None) is not None:
        _local.read += nbytes
    with _lock:
        if _stages:
            _stages[-1].bytes_done += nbytes
    _redraw()


def _redraw() -> None:
    display = _display
    if display is None:
        return
    now = time.monotonic()
    with _lock:
        if not _stages:
            return
        current = _stages[-1]
        if now - current.shown_at < display.interval:
            return
        current.shown_at = now
        snapshot = current.snapshot()
    if _drawing.acquire(blocking=False):
        try:
            display.show(snapshot)
        finally:
            _drawing.release()
