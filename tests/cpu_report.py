"""The run's CPU seconds, printed at the end of every pytest run (CI's log shows the tier's).

Wall time depends on what else the machine runs; CPU time (user + system, of pytest, its
xdist workers and every process the tests started and waited for) hardly does, so this is
the figure to compare between runs. With xdist, each worker reports its own (itself and
its children) when it finishes; the controller adds its own.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

WORKER_KEY = "flsilo_cpu_s"


def _cpu(who: int) -> tuple[float, float]:
    usage = resource.getrusage(who)
    return usage.ru_utime, usage.ru_stime


_EARLIER_CHILDREN = _cpu(resource.RUSAGE_CHILDREN)
"""CPU of children this process had already waited for when pytest began: a shell running
the README's ``... && pip install ... && python -m pytest`` through ``sh -c`` may run
pytest in its own process (exec), and pip's minute of CPU would count as the tests'."""
_IMPORTED_AT = time.monotonic()
_SELF_AT_IMPORT = sum(_cpu(resource.RUSAGE_SELF))


def since_start() -> float | None:
    """Seconds since pytest started, interpreter start-up included. In a process that was a
    shell until it ran pytest (see ``_EARLIER_CHILDREN``) the process is older than pytest:
    then the time since this module was imported plus the CPU spent before it (start-up
    is busy, not waiting)."""
    if any(_EARLIER_CHILDREN):
        return time.monotonic() - _IMPORTED_AT + _SELF_AT_IMPORT
    return process_age()


def process_age() -> float | None:
    """Seconds since this process started (Linux), interpreter start-up included."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_and_children() -> tuple[float, float]:
    (user, system), (child_user, child_system) = (
        _cpu(resource.RUSAGE_SELF),
        _cpu(resource.RUSAGE_CHILDREN),
    )
    return user + child_user - _EARLIER_CHILDREN[0], system + child_system - _EARLIER_CHILDREN[1]


class CpuReport:
    @classmethod
    def register(cls, config: pytest.Config) -> None:
        config.pluginmanager.register(cls(config), "flsilo-cpu-report")

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.workers: list[tuple[float, float]] = []
        self.lost_workers = 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        output = getattr(self.config, "workeroutput", None)
        if output is not None:  # an xdist worker: the controller adds it up
            output[WORKER_KEY] = own_and_children()

    @pytest.hookimpl(optionalhook=True)  # xdist's hook (absent without xdist)
    def pytest_testnodedown(self, node: object) -> None:
        """A worker ended: take the CPU it reported."""
        reported = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if reported is None:
            self.lost_workers += 1
        else:
            self.workers.append((reported[0], reported[1]))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if hasattr(self.config, "workeroutput"):
            return
        wall = since_start()
        if self.workers or self.lost_workers:
            # The controller's own children are its workers: counted from their reports.
            user, system = _cpu(resource.RUSAGE_SELF)
            for worker_user, worker_system in self.workers:
                user, system = user + worker_user, system + worker_system
            who = f"pytest and {len(self.workers)} xdist workers with their children"
        else:
            user, system = own_and_children()
            who = "pytest and its children"
        line = f"CPU time {user + system:.1f} s (user {user:.1f} s, system {system:.1f} s; {who})"
        if wall is not None:
            line += f"; wall time {wall:.1f} s since pytest started"
        if self.lost_workers:
            line += f"; {self.lost_workers} worker(s) ended without reporting"
        terminalreporter.write_sep("-", line)
