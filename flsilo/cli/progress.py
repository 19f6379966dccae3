"""Progress on stderr, for training and for long hub work: a redrawn line at a terminal,
occasional plain lines in a pipe or a log, nothing at all with ``--json``; never on stdout.

The hub's work (``aggregate``, ``audit --replay``, ``verify`` of large files) reports
through :mod:`flsilo.runtime.progress`; :func:`shown` installs the display that fits stderr for the
length of one command. Work shorter than ``FLSILO_PROGRESS_AFTER`` seconds (default 1)
draws nothing, so a quick command prints exactly what it printed before.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flsilo.cli.common import STATE, stderr
from flsilo.runtime import progress
from flsilo.runtime.progress import counted

AFTER_ENV = "FLSILO_PROGRESS_AFTER"
DEFAULT_AFTER = 1.0
"""Seconds a stage runs before its progress shows."""
PLAIN_EVERY = 10.0
"""Seconds between plain lines (a pipe, a log file)."""


def bar(*columns: Any, auto_refresh: bool = True) -> Any:
    """A rich progress display on stderr (start it) that leaves no trace when it stops.

    Nothing printed to stdout goes through it (data stays on stdout); lines written to
    stderr meanwhile are printed above it. ``auto_refresh=False``: it redraws only when
    told (``refresh()``), never from a thread of its own.
    """
    from rich.progress import Progress

    live = Progress(
        *columns,
        console=stderr(),
        transient=True,
        redirect_stdout=False,
        auto_refresh=auto_refresh,
    )
    return live


def after_seconds() -> float:
    """``FLSILO_PROGRESS_AFTER`` (seconds, 0 or more), else the default."""
    try:
        value = float(os.environ.get(AFTER_ENV, DEFAULT_AFTER))
    except ValueError:
        return DEFAULT_AFTER
    return value if value >= 0 else DEFAULT_AFTER


def size_text(n: float) -> str:
    """Bytes for people: ``512 B``, ``7.5 KiB``, ``774 MiB``, ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration_text(seconds: float) -> str:
    """``4 s``, ``2 min 05 s``, ``1 h 02 min``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _what(command: str, snap: progress.Snapshot) -> str:
    if snap.units and snap.unit:
        return f"{command}: {snap.label} {snap.units_done}/{snap.units} {snap.unit}"
    return f"{command}: {snap.label}"


def _figures(snap: progress.Snapshot, sep: str) -> str:
    parts = [f"{size_text(snap.bytes_done)} of {size_text(snap.total_bytes)}"]
    if snap.rate:
        parts.append(f"{size_text(snap.rate)}/s")
    left = snap.left
    if left is not None:
        parts.append(f"about {duration_text(left)} left" if left >= 1 else "under 1 s left")
    return sep.join(parts)


def summary(command: str, snap: progress.Snapshot) -> str:
    """The line a finished stage ends with in a pipe."""
    what = f" {counted(snap.units_done, snap.unit)}," if snap.units and snap.unit else ""
    rate = f" ({size_text(snap.rate)}/s)" if snap.rate else ""
    took = duration_text(snap.elapsed)
    return f"{command}: {snap.label} done:{what} {size_text(snap.bytes_done)} in {took}{rate}"


class TerminalDisplay:
    """One redrawn line (rich's bar, as training's), gone when the work ends."""

    interval = 0.25

    def __init__(
        self, command: str, after: float, quiet: Callable[[], bool] = lambda: False
    ) -> None:
        self.command = command
        self.after = after
        self.quiet = quiet
        self.live: Any = None
        self.task: Any = None

    def show(self, snap: progress.Snapshot) -> None:
        if self.quiet():
            return
        if snap.finished:
            if snap.depth == 0:
                self.close()  # between stages nothing is drawn: a prompt there stays visible
            return
        if snap.elapsed < self.after or not snap.sized:
            return
        if self.live is None:
            from rich.progress import BarColumn, TextColumn

            self.live = bar(
                TextColumn("{task.description}"),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[figures]}"),
                auto_refresh=False,
            )
            self.task = self.live.add_task(_what(self.command, snap), total=1, figures="")
            self.live.start()
        self.live.update(
            self.task,
            description=_what(self.command, snap),
            completed=snap.bytes_done,
            total=max(snap.total_bytes, 1),
            figures=_figures(snap, "  "),
        )
        self.live.refresh()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = self.task = None


class PlainDisplay:
    """A line every ``PLAIN_EVERY`` seconds while a stage runs, and one when it ends."""

    interval = 1.0

    def __init__(
        self, command: str, after: float, quiet: Callable[[], bool] = lambda: False
    ) -> None:
        self.command = command
        self.after = after
        self.quiet = quiet
        self.last: dict[int, float] = {}
        """Per stage depth: when its last line was written (absent: none yet)."""

    def show(self, snap: progress.Snapshot) -> None:
        if self.quiet():
            return
        if snap.finished:
            if self.last.pop(snap.depth, None) is not None:
                self._write(summary(self.command, snap))
            return
        if snap.elapsed < self.after or not snap.sized:
            return
        last = self.last.get(snap.depth)
        if last is None or snap.elapsed - last >= PLAIN_EVERY:
            self.last[snap.depth] = snap.elapsed
            self._write(f"{_what(self.command, snap)}, {_figures(snap, ', ')}")

    @staticmethod
    def _write(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        self.last.clear()


@contextmanager
def shown(command: str) -> Iterator[None]:
    """Show the progress of ``command``'s long work on stderr (nothing once ``--json`` is set,
    which the command does after this begins)."""
    kind = TerminalDisplay if sys.stderr.isatty() else PlainDisplay
    display = kind(command, after_seconds(), quiet=lambda: STATE.json)
    try:
        with progress.showing(display):
            yield
    finally:
        display.close()


def with_progress(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a command under :func:`shown`; typer sees the command's own signature and help."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with shown(command):
                return func(*args, **kwargs)

        del run.__wrapped__  # typer reads the signature below, its annotations evaluated
        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return run

    return decorate


class ProgressPrinter:
    """Training's progress: rich's bar on a terminal; one plain line per epoch otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.live = sys.stderr.isatty() and not quiet
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressPrinter:
        return self

    def _start(self) -> None:
        """Draw the bar only once batches run: a passphrase prompt before it stays visible."""
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

        self.progress = bar(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
        )
        self.progress.start()

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        from site_kit.training import BatchReport, EpochReport

        if self.quiet:
            return
        if isinstance(event, EpochReport):
            if event.resumed:
                stderr().print(
                    f"resuming after epoch {event.epoch} of {event.epochs} (from checkpoint)"
                )
                return
            if self.progress and self.task is not None:
                self.progress.remove_task(self.task)
                self.task = None
            # through the live display's own console, so the finished line is not overdrawn
            console = self.progress.console if self.progress else stderr()
            console.print(
                f"epoch {event.epoch}/{event.epochs}: loss {event.loss:.4f}, {event.samples_per_second:,.0f} samples/s"
            )
        elif isinstance(event, BatchReport) and self.live:
            if self.progress is None:
                self._start()
            stats = f"batch {event.batch}/{event.batches} loss {event.loss:.4f} {event.samples_per_second:,.0f}/s"
            if self.task is None:
                self.task = self.progress.add_task(
                    "train", total=event.batches, epoch=event.epoch, stats=stats
                )
            self.progress.update(self.task, completed=event.batch, epoch=event.epoch, stats=stats)
