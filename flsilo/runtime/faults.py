"""Environment-gated fault points: tests kill a command at a named step of its commit path,
or make one of its writes fail as a full disk would.

``FLSILO_FAULT=aggregate:commit`` makes the process SIGKILL itself when it reaches
``fault_point("aggregate:commit")``. ``FLSILO_FAULT=disk-full:N`` makes the N-th atomic
write of the process (:func:`disk_point`, called by ``flsilo.fs.atomic`` before it syncs a
file) fail with ``ENOSPC``. Unset (always, outside tests) neither does anything.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path

FAULT_ENV = "FLSILO_FAULT"
DISK_FULL = "disk-full:"

_lock = threading.Lock()
_writes = 0


def fault_point(name: str) -> None:
    """Die here, as a power cut would, if ``$FLSILO_FAULT`` names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def disk_point(path: Path) -> None:
    """Fail this write with ENOSPC if ``$FLSILO_FAULT`` is ``disk-full:N`` and it is the N-th."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec.startswith(DISK_FULL):
        return
    global _writes
    with _lock:
        _writes += 1
        hit = _writes == int(spec.removeprefix(DISK_FULL))
    if hit:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
