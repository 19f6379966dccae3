"""A full disk at any write of a round: the command says what happened; when it says nothing
was changed, no staging folder is left, the log is untouched and audit passes at once."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Federation, fingerprint
from tests.conftest import run_forked as flsilo

NOTHING_CHANGED = "nothing was changed"


def audit_failures(cli, federation: Federation) -> list[str]:
    """The names of audit's failed checks (with the hub's fingerprint as its trust root where
    audit takes one)."""
    args: list[object] = ["audit", federation.hub, "--json"]
    if "--hub-fingerprint" in cli("audit", "--help").out:
        args += ["--hub-fingerprint", fingerprint(federation.keys / "hub.pub")]
    result = cli(*args)
    doc = json.loads(result.out)
    failed = [c["name"] for c in doc["audit"]["checks"] if not c["ok"]]
    assert (result.code == 0) == (not failed), result.out
    return failed


def check_disk_full_at(federation: Federation, cli, point: int) -> bool:
    """Run aggregate with its ``point``-th write failing; False once the round has fewer."""
    hub = federation.hub
    log = (hub / "events.jsonl").read_bytes()
    result = flsilo("aggregate", hub, fault=f"disk-full:{point}")
    if result.returncode == 0:
        return False
    assert result.returncode == 1, result.stderr
    assert "error[disk-full]" in result.stderr and len(result.stderr.splitlines()) == 1
    if NOTHING_CHANGED in result.stderr:
        assert not list((hub / "rounds").glob("*.staging")), point
        assert (hub / "events.jsonl").read_bytes() == log
        assert not (hub / "packages" / "fed-r0001.safetensors").exists()
    else:  # full after the log's append: the next command completes the commit
        assert "the next hub command completes it" in result.stderr, result.stderr
    if NOTHING_CHANGED in result.stderr:
        assert audit_failures(cli, federation) == [], point
    rerun = cli("aggregate", hub)
    assert rerun.code == 0, rerun.err  # redone, or (committed already) published
    assert (hub / "packages" / "fed-r0001.safetensors").exists()
    assert audit_failures(cli, federation) == []
    return True


def test_disk_full_at_the_first_and_a_later_write(federation: Federation, cli) -> None:
    federation.carry()
    copy = federation.copy(federation.root.parent / "copy")
    assert check_disk_full_at(federation, cli, 1)
    assert check_disk_full_at(copy, cli, 6)


@pytest.mark.slow
def test_disk_full_at_every_write_of_a_round(federation: Federation, cli) -> None:
    """Every write of a round with two accepted bundles and a reject (its quarantine)."""
    federation.carry()
    (federation.hub / "inbox" / "junk.safetensors").write_bytes(b"junk")
    template = federation.copy(federation.root.parent / "template")
    point = 0
    while True:
        point += 1
        fed = template.copy(federation.root.parent / f"at-{point}")
        if not check_disk_full_at(fed, cli, point):
            break
    assert point > 10  # every write of the round was hit once
