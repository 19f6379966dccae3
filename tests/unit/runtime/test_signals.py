"""Termination signals: a handler's exception that Python swallows is not a lost signal."""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any

import pytest

from flsilo.runtime import signals

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM here")


class _SignalledWhileDeleted:
    """Deleting it sends this process SIGTERM from inside ``__del__``, where an exception is
    only printed ("Exception ignored in ..."), as in the at-fork hooks a DataLoader runs."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs at the next bytecode, still in here
            pass


class _FailsWhileDeleted:
    def __del__(self) -> None:
        raise ValueError("not a signal")


def test_a_swallowed_signal_stops_the_next_check_and_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    swallowed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_value))
    hook = sys.unraisablehook
    steps = []
    with pytest.raises(signals.Interrupted) as stopped:
        with signals.handled():
            _SignalledWhileDeleted()
            _FailsWhileDeleted()  # another lost exception still reaches the hook
            steps.append("after the swallowed signal")  # the exception never came here
            with pytest.raises(signals.Interrupted) as checked:
                signals.check()  # a loop's next step stops
            assert checked.value.signum == signal.SIGTERM
            steps.append("block ends")
    assert steps == ["after the swallowed signal", "block ends"]
    assert stopped.value.signum == signal.SIGTERM  # the block does not end as if finished
    assert signals.exit_status(stopped.value) == 143
    # Python's "Exception ignored" traceback is not printed for the signal, only for others
    assert [type(e) for e in swallowed] == [ValueError]
    assert sys.unraisablehook is hook
    with signals.handled():  # the next command starts clean
        signals.check()


def test_a_delivered_signal_raises_once_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Interrupted) as stopped:
        with signals.handled():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass
    assert stopped.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with signals.handled():
        signals.check()  # nothing pending


def _worker(reset: bool) -> None:
    if reset:
        signals.worker_defaults(0)
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10_000_000):  # the handler runs here (or the default action ends us)
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers are forked where fork exists")
@pytest.mark.parametrize("reset", [True, False])
def test_a_worker_stopped_by_sigterm_dies_quietly(reset: bool) -> None:
    """A DataLoader worker forked inside the command's signal block inherits its handler;
    with the worker defaults back, SIGTERM ends it at once and prints nothing."""
    import multiprocessing

    with signals.handled():
        child = multiprocessing.get_context("fork").Process(target=_worker, args=(reset,))
        child.start()
        child.join(30)
    # reset: killed by the signal itself; inherited handler: Interrupted raised, exit 1
    assert child.exitcode == (-signal.SIGTERM if reset else 1)


def test_a_signal_while_forking_waits_for_the_next_check() -> None:
    """Between the fork hooks (logging's lock held) the handler only records the signal: an
    exception there would leave the lock held and hang the command's last log call."""
    import logging

    reached = []
    with pytest.raises(signals.Interrupted) as stopped:
        with signals.handled():
            signals._fork_starts()  # what os.fork runs first (ours run around logging's)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs here, and must not raise
                    pass
                reached.append("fork hooks done")
            finally:
                signals._fork_ends()
            logging.getLogger("flsilo.test").info("after the fork")
            with pytest.raises(signals.Interrupted):
                signals.check()
            reached.append("checked")
    assert reached == ["fork hooks done", "checked"]
    assert stopped.value.signum == signal.SIGTERM


def _raises_in(filename: str) -> Any:
    """A thread body whose frame claims ``filename`` and reports its exception through
    ``sys.excepthook``, as multiprocessing's resource sharer does."""
    namespace: dict[str, Any] = {"sys": sys}
    code = (
        "def serve():\n"
        "    try:\n"
        "        raise ConnectionResetError(104, 'Connection reset by peer')\n"
        "    except ConnectionError:\n"
        "        sys.excepthook(*sys.exc_info())\n"
    )
    exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - a fixed test snippet
    return namespace["serve"]


@pytest.mark.parametrize(
    ("filename", "printed"),
    [
        (os.path.join("lib", "multiprocessing", "resource_sharer.py"), False),
        (os.path.join("lib", "elsewhere.py"), True),
    ],
)
def test_a_workers_hand_off_thread_losing_the_stopped_command_says_nothing(
    filename: str, printed: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a worker, the resource sharer's thread that finds the command gone mid-hand-off
    (the command was stopped) prints no traceback after the command's one-line message;
    any other exception is printed as Python prints it."""
    import threading

    before = sys.excepthook
    numbers = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    handlers = {number: signal.getsignal(number) for number in numbers}
    try:
        signals.worker_defaults(0)
        assert sys.excepthook is signals.quiet_handoff
        thread = threading.Thread(target=_raises_in(filename))
        thread.start()
        thread.join()
    finally:
        sys.excepthook = before
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert ("ConnectionResetError" in capsys.readouterr().err) is printed


def test_a_loader_stopped_while_it_starts_adds_nothing_after_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signal inside torch's multi-process DataLoader iterator's ``__init__`` (while it
    makes its queues) leaves it half built; its ``__del__`` then fails on an attribute never
    set. It is freed while the block still filters that echo, not after the command's
    one-line message, where Python printed it as the last line of the command's output."""
    import torch

    def signal_arrives(*_args: object, **_kwargs: object) -> None:
        raise signals.Interrupted(signal.SIGTERM)

    loader = torch.utils.data.DataLoader(list(range(4)), num_workers=1)
    monkeypatch.setattr(torch.multiprocessing, "Queue", signal_arrives)
    printed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_value))
    try:
        with signals.handled():
            iter(loader)
    except signals.Interrupted as stopped:
        assert stopped.signum == signal.SIGTERM
    gc.collect()  # the exception and its frames are gone: anything left is freed by now
    assert printed == []
