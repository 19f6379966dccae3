"""Long hub work shows its progress on stderr: a redrawn line at a terminal, plain lines in a
pipe, nothing with --json, never on stdout. FLSILO_PROGRESS_AFTER=0 shows it at once (by
default only work that runs longer than a second shows any)."""

from __future__ import annotations

import json
import os
import re
import select
import sys
from pathlib import Path

import pytest

from tests.conftest import Federation, hub_root

PROGRESS = re.compile(r"^(aggregate|audit|verify): ", re.MULTILINE)


def test_aggregate_and_audit_in_a_pipe_write_plain_lines_to_stderr_only(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLSILO_PROGRESS_AFTER", "0")
    federation.carry()
    result = cli("aggregate", federation.hub)
    assert result.code == 0, result.err
    assert "aggregate: verifying 0/2 bundles, 0 B of " in result.err
    assert re.search(
        r"^aggregate: verifying done: 2 bundles, [\d.]+ KiB in \d+ s", result.err, re.M
    )
    assert "aggregate: combining 2 bundles done: " in result.err
    assert not PROGRESS.search(result.out)  # stdout: the report and the package path only
    assert Path(result.out.strip().splitlines()[-1]).name == "fed-r0001.safetensors"

    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay")
    assert audit.code == 0, audit.out
    # two packages and two archived bundles verified; the round replayed on its own line
    assert re.search(r"^audit: checking done: 4 files, ", audit.err, re.M), audit.err
    assert "audit: combining 2 bundles done: " in audit.err
    assert not PROGRESS.search(audit.out)


def test_json_shows_no_progress_at_all(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLSILO_PROGRESS_AFTER", "0")
    federation.carry()
    result = cli("aggregate", federation.hub, "--json")
    assert result.code == 0 and json.loads(result.out)["ok"]
    assert not PROGRESS.search(result.err), result.err
    package = federation.hub / "packages" / "fed-r0001.safetensors"
    checked = cli("verify", package, "--signers", federation.hub / "allowed_signers", "--json")
    assert checked.code == 0 and json.loads(checked.out)["ok"]
    assert not PROGRESS.search(checked.err), checked.err
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay", "--json")
    assert audit.code == 0 and json.loads(audit.out)["ok"]
    assert not PROGRESS.search(audit.err), audit.err


def test_quick_work_shows_nothing_by_default(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLSILO_PROGRESS_AFTER", raising=False)
    federation.carry()
    result = cli("aggregate", federation.hub)
    assert result.code == 0, result.err
    assert not PROGRESS.search(result.err), result.err


# verify's plain lines through a real pipe, in a process of its own (``python -m flsilo``):
# tests/integration/test_cli.py, in the one fresh process its commands share.


@pytest.mark.slow
def test_aggregate_at_a_terminal_draws_a_line_and_leaves_no_trace(
    federation: Federation,
) -> None:
    """In a pty: rich's live line (hidden cursor, redrawn, cleared), no plain summary lines,
    and the command's own output as before."""
    import pty

    federation.carry()
    env = dict(os.environ, FLSILO_PROGRESS_AFTER="0", COLUMNS="100")
    env.pop("FLSILO_FAULT", None)
    argv = [sys.executable, "-m", "flsilo", "aggregate", str(federation.hub)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: flsilo with the pty as its terminal
        os.execve(sys.executable, argv, env)
    seen = bytearray()
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = bytes(seen).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert b"\x1b[?25l" in seen and b"\x1b[?25h" in seen  # a live line was drawn and ended
    assert "aggregate: verifying" in text and "aggregate: combining 2 bundles" in text
    assert "done:" not in text  # the plain summaries are for pipes
    assert "fed-r0001.safetensors" in text and "Traceback" not in text
