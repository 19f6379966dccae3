"""A kill between the log's append and its signature heals by itself (the pending-commit
journal), and nothing the hub did not write is ever signed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_kit.eventlog import EventLog
from hub_kit.events import Revoke
from hub_kit.journal import journal_path
from hub_kit.workspace import HubWorkspace
from tests.conftest import Federation, fingerprint, make_key
from tests.conftest import run_forked as flsilo

LOG_STEPS = ["log:journal", "log:appended", "log:signers", "log:signed"]
UNSIGNED = ("log:appended", "log:signers")
"""Steps after which the log on disk is not covered by events.jsonl.sig."""


def enroll_args(federation: Federation, name: str) -> list[object]:
    pub = Path(f"{make_key(federation.root / name)}.pub")
    return ["hub", "enroll", federation.hub, name, pub, "--fingerprint", fingerprint(pub)]


def sites(hub: Path) -> list[str]:
    return HubWorkspace.open(hub).state().active_sites()


def check_enroll_killed_at(federation: Federation, cli, step: str, name: str) -> None:
    hub = federation.hub
    killed = flsilo(*enroll_args(federation, name), fault=step)
    assert killed.returncode == -9, killed.stderr
    log = (hub / "events.jsonl").read_bytes()
    committed = step != "log:journal"
    # a lock-free reader already accepts the log: the journal's signature covers it
    status = cli("hub", "status", hub, "--json")
    assert status.code == 0, status.err
    assert ("pending-commit journal" in status.err) == (step in UNSIGNED), status.err
    listed = {s.get("site") or s.get("id") for s in json.loads(status.out)["sites"]}
    assert (name in listed) == committed, listed
    # the next writer completes the signature and says so
    other = f"{name}-next"
    after = cli(*enroll_args(federation, other))
    assert after.code == 0, after.err
    assert ("completed the hub's signature" in after.err) == (step in UNSIGNED), after.err
    assert not journal_path(hub / "events.jsonl").exists()
    assert (name in sites(hub)) == committed and other in sites(hub)
    assert (hub / "events.jsonl").read_bytes().startswith(log)  # nothing rewritten
    assert HubWorkspace.open(hub).trust(HubWorkspace.open(hub).state())  # allowed_signers fits


@pytest.mark.parametrize("step", LOG_STEPS)
def test_a_kill_at_each_step_of_the_log_commit_recovers(
    federation: Federation, cli, step: str
) -> None:
    check_enroll_killed_at(federation, cli, step, "site-k")


def test_a_kill_before_the_signature_of_a_round_recovers_and_publishes(
    federation: Federation, cli
) -> None:
    federation.carry()
    killed = flsilo("aggregate", federation.hub, fault="log:appended")
    assert killed.returncode == -9, killed.stderr
    rerun = cli("aggregate", federation.hub)
    assert rerun.code == 0 and "completed the hub's signature" in rerun.err
    assert "round 0 was committed by an interrupted aggregate" in rerun.err  # not redone
    state = HubWorkspace.open(federation.hub).state()
    assert state.round == 1
    assert (federation.hub / "packages" / state.package_files[1]).exists()
    assert HubWorkspace.open(federation.hub).unrecorded(state) == []


@pytest.mark.slow
def test_ten_of_ten_kills_between_append_and_signature_recover(federation: Federation, cli) -> None:
    for n in range(10):
        check_enroll_killed_at(federation, cli, "log:appended", f"site-k{n}")


def _kill_after_append(federation: Federation) -> tuple[bytes, bytes]:
    killed = flsilo(*enroll_args(federation, "site-k"), fault="log:appended")
    assert killed.returncode == -9, killed.stderr
    log = federation.hub / "events.jsonl"
    return log.read_bytes(), journal_path(log).read_bytes()


def test_lines_appended_by_hand_with_the_signature_deleted_are_refused(
    federation: Federation, cli
) -> None:
    log = federation.hub / "events.jsonl"
    rebuilt = federation.root / "copy.jsonl"
    rebuilt.write_bytes(log.read_bytes())
    EventLog(rebuilt).append([Revoke(site="site-a", valid_before=4102444800)])
    log.write_bytes(rebuilt.read_bytes())  # a valid chain, one line longer
    (federation.hub / "events.jsonl.sig").unlink()
    for args in (("hub", "status", federation.hub), enroll_args(federation, "site-x")):
        result = cli(*args)
        assert result.code == 3 and "error[log-unsigned]" in result.err, result.err


def test_a_journal_that_does_not_match_the_tail_byte_for_byte_is_refused(
    federation: Federation, cli
) -> None:
    raw, _ = _kill_after_append(federation)
    log = federation.hub / "events.jsonl"
    log.write_bytes(raw.replace(b'"site-k"', b'"site-z"'))  # the unsigned tail changed
    result = cli("hub", "status", federation.hub)
    assert result.code == 3 and "error[bad-signature]" in result.err, result.err
    log.write_bytes(raw)  # put back exactly: recovers
    assert cli("hub", "status", federation.hub).code == 0


def test_a_forged_journal_for_appended_lines_is_refused(federation: Federation, cli) -> None:
    """Someone without the hub key appends lines and writes a journal for them: its
    signature is not the hub's over the log, so nothing is completed."""
    raw, journal = _kill_after_append(federation)
    log = federation.hub / "events.jsonl"
    doc = json.loads(journal)
    # the old, genuine log signature in the journal: it does not cover the appended lines
    doc["signature"] = (federation.hub / "events.jsonl.sig").read_text()
    journal_path(log).write_text(json.dumps(doc))
    for args in (("hub", "status", federation.hub), enroll_args(federation, "site-x")):
        result = cli(*args)
        assert result.code == 3 and "error[bad-signature]" in result.err, result.err
    assert log.read_bytes() == raw and journal_path(log).exists()  # refused, nothing changed


def test_a_journal_signed_by_another_key_is_refused(federation: Federation, cli) -> None:
    from flsilo.signing.keys import load_private_key
    from hub_kit.anchor import log_signature

    raw, journal = _kill_after_append(federation)
    doc = json.loads(journal)
    stranger = load_private_key(make_key(federation.root / "stranger"), lambda _p: b"")
    doc["signature"] = log_signature(stranger, raw).decode()
    journal_path(federation.hub / "events.jsonl").write_text(json.dumps(doc))
    result = cli("hub", "status", federation.hub)
    assert result.code == 3 and "error[bad-signature]" in result.err, result.err
