"""Environment-gated fault points: tests kill a command at a named step of its commit path.

``FLSILO_FAULT=aggregate:commit`` makes the process SIGKILL itself when it reaches
``fault_point("aggregate:commit")``. Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "FLSILO_FAULT"


def fault_point(name: str) -> None:
    """Die here, as a power cut would, if ``$FLSILO_FAULT`` names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
