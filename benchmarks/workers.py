"""Seeds side by side in worker processes that stop when the script is stopped.

A bare ``ProcessPoolExecutor`` outlives its script: SIGTERM's default action ends only the
parent, and on Ctrl-C each worker takes its KeyboardInterrupt as the seed's result and
starts the next seed it already holds. ``map_in_workers`` ends them instead: workers
ignore Ctrl-C, and when the script is stopped (SIGTERM becomes ``SystemExit(143)``, Ctrl-C
``KeyboardInterrupt``) it terminates them; in a worker SIGTERM becomes ``SystemExit`` too,
so its ``with`` blocks unwind and its temporary folders go, and it exits rather than take
more work.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _stop(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: a second signal must not cut the unwinding
    raise SystemExit(128 + signum)


def _worker_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the script, which ends us
    signal.signal(signal.SIGTERM, _stop)


def _in_worker(fn: Callable[[T], R], item: T) -> R:
    try:
        return fn(item)
    except (KeyboardInterrupt, SystemExit):  # stopped, and unwound: take no more work
        sys.stderr.flush()
        os._exit(1)


def map_in_workers(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> list[R]:
    """``[fn(item) for item in items]``, ``jobs`` at a time in worker processes (``fn`` a
    module-level function). SIGTERM or Ctrl-C stops the workers too; the script then exits
    with ``SystemExit(143)`` or ``KeyboardInterrupt``."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with ProcessPoolExecutor(jobs, initializer=_worker_signals) as pool:
            try:
                return list(pool.map(partial(_in_worker, fn), items))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                for child in multiprocessing.active_children():
                    child.terminate()
                raise
    finally:
        signal.signal(signal.SIGTERM, previous)
