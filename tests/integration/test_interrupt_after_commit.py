"""Ctrl-C while aggregate publishes a round it already committed: the line says the round was
committed and how its files get published, and rerunning aggregate finishes that round
instead of starting the next one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_kit import commit
from hub_kit.workspace import HubWorkspace
from tests.conftest import Federation, hub_root


def _interrupt_the_first_publish_step(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The first file moved into place, then Ctrl-C (as if pressed during the copy)."""
    moved: list[Path] = []
    real = commit.fsync_dir

    def fsync_then_stop(path: Path) -> None:
        real(path)
        moved.append(path)
        if len(moved) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(commit, "fsync_dir", fsync_then_stop)
    return moved


def test_an_interrupt_after_the_commit_says_so_and_the_rerun_finishes_the_round(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = federation.hub
    federation.carry()
    package = hub / "packages" / "fed-r0001.safetensors"
    moved = _interrupt_the_first_publish_step(monkeypatch)
    stopped = cli("aggregate", hub)
    assert moved and stopped.code == 130, stopped.err
    line = stopped.err.strip().splitlines()[-1]
    assert line == (
        "flsilo: error[interrupted]: flsilo aggregate interrupted (Ctrl-C) after round 0 was "
        "committed to the event log; its package and archive are not all in place yet "
        "(hint: rerun 'flsilo aggregate' (or any hub command that changes the workspace) to "
        "publish them; the round is not redone)"
    )
    assert "nothing half-written" not in stopped.err
    assert HubWorkspace.open(hub).state().round == 1 and not package.exists()
    assert (hub / "rounds" / "0000.staging").is_dir()
    monkeypatch.undo()

    rerun = cli("aggregate", hub)
    assert rerun.code == 0, rerun.err
    assert rerun.out == f"{package}\n"
    assert "round 0 was committed by an interrupted aggregate" in rerun.err
    assert "not-enough-sites" not in rerun.err
    state = HubWorkspace.open(hub).state()
    assert state.round == 1 and package.is_file() and (hub / "rounds" / "0000").is_dir()
    assert not list((hub / "rounds").glob("*.staging"))
    status = json.loads(cli("hub", "status", hub, "--json").out)
    assert status["unrecorded"] == []
    audit = cli("audit", hub, *hub_root(hub))
    assert audit.code == 0, audit.out
    assert "(1 round aggregated, trusting" in " ".join(audit.out.split())  # not "1 rounds"
    # the round is done: the next aggregate is round 1's, and the inbox holds round 0's
    again = cli("aggregate", hub, "--json")
    error = json.loads(again.out)["error"]
    assert again.code == 1 and error["code"] == "not-enough-sites"
    assert error["hint"] == (
        "every bundle in the inbox was already aggregated (round 0 is done); carry round 1's "
        "bundles, then run aggregate again"
    )
