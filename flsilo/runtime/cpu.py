"""How many CPU threads a command may use: the affinity and quota this process really has.

``os.cpu_count()`` reports the machine; a container or a ``taskset`` limits the process to
fewer cores, and OpenMP sizing its pool by the machine oversubscribes them. flsilo sizes
every thread pool from :func:`cpu_budget` unless ``--threads`` says otherwise, and sets it
before torch is imported (torch reads ``OMP_NUM_THREADS`` when it starts).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Environment variables the numeric libraries read to size their thread pools."""


def _affinity() -> int:
    getter = getattr(os, "sched_getaffinity", None)  # Linux; absent on Windows and macOS
    if getter is not None:
        try:
            return max(1, len(getter(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us`` limit, if any."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def cpu_budget() -> int:
    """The CPUs this process may really use: affinity, bounded by a cgroup quota."""
    allowed = _affinity()
    quota = _cgroup_quota()
    return min(allowed, quota) if quota is not None else allowed


def configure_threads(threads: int | None) -> int:
    """Size the numeric thread pools to ``threads`` (default: :func:`cpu_budget`); return it.

    An explicit ``OMP_NUM_THREADS`` in the environment wins over the default, never over
    ``--threads``.
    """
    if threads is None:
        preset = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(preset) if preset.isdigit() and int(preset) > 0 else cpu_budget()
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported (tests, a library caller): tell it directly
        torch.set_num_threads(threads)
    return threads


def current_threads() -> int:
    """The thread count set by :func:`configure_threads`, or the CPU budget."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else cpu_budget()
