"""benchmarks/workers.py: a results script stopped by SIGTERM or Ctrl-C stops its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

SCRIPT = """
import os, signal, sys, tempfile, time
# A shell that starts pytest in the background (`&`) ignores SIGINT for all it starts, and
# Python keeps an ignored SIGINT ignored; a script run from a terminal has Ctrl-C.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {bench!r})
from workers import map_in_workers

def seed(n):
    with tempfile.TemporaryDirectory(dir={tmp!r}, prefix="seed-"):
        open(os.path.join({tmp!r}, "pid-%d" % os.getpid()), "w").close()
        while True:
            time.sleep(0.02)

if __name__ == "__main__":
    try:
        map_in_workers(seed, range(5), 2)
    except KeyboardInterrupt:
        sys.exit(130)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stopping_the_script_stops_its_workers(tmp_path: Path, how: str) -> None:
    script = tmp_path / "bench.py"
    script.write_text(SCRIPT.format(bench=str(BENCHMARKS), tmp=str(tmp_path)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        check_stop(proc, tmp_path, how, workers)
    finally:  # a failing check leaves nothing running
        for pid in [proc.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


def check_stop(proc: subprocess.Popen, tmp_path: Path, how: str, workers: list[int]) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a timing assertion
    while len(list(tmp_path.glob("pid-*"))) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "workers never started"
        time.sleep(0.02)
    workers += [int(p.name.split("-")[1]) for p in tmp_path.glob("pid-*")]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    if how == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)  # the script only, as `kill PID` does
    else:
        os.killpg(proc.pid, signal.SIGINT)  # the whole foreground group, as Ctrl-C does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if how == "sigterm" else 130), err
    for pid in workers:
        while alive(pid):  # a terminated worker may take a moment to be reaped
            assert time.monotonic() < deadline, f"worker {pid} still running"
            time.sleep(0.02)
    assert list(tmp_path.glob("seed-*")) == []  # each worker unwound its `with` blocks
    assert len(list(tmp_path.glob("pid-*"))) == 2  # and none started another seed
