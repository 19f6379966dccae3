"""The hub's commit path: kills at every step, one locked transaction per state change,
revocation ordered by the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flsilo.format.artifact import scan_file
from hub_kit.eventlog import EventLog
from hub_kit.events import Accept, Enroll, Revoke, of_kind
from hub_kit.workspace import HubWorkspace
from tests.conftest import Federation, fingerprint, hub_root, make_key, needs_ssh_keygen, ssh_keygen
from tests.conftest import run_forked as flsilo

STEPS_BEFORE_COMMIT = ["aggregate:staged", "aggregate:built", "aggregate:commit"]
STEPS_AFTER_COMMIT = ["aggregate:committed", "aggregate:published"]


def round_of(hub: Path) -> int:
    return HubWorkspace.open(hub).state().round


def check_kill_at(federation: Federation, cli, step: str) -> None:
    federation.carry()
    package = federation.hub / "packages" / "fed-r0001.safetensors"
    killed = flsilo("aggregate", federation.hub, fault=step)
    assert killed.returncode == -9, killed.stderr
    committed = step in STEPS_AFTER_COMMIT
    assert round_of(federation.hub) == (1 if committed else 0)
    if package.exists():  # a visible package is always the one the log committed
        assert committed
        assert scan_file(package).sha256 == HubWorkspace.open(federation.hub).state().packages[1]
    status = json.loads(cli("hub", "status", federation.hub, "--json").out)
    if step in ("aggregate:staged", "aggregate:built", "aggregate:commit", "aggregate:committed"):
        assert status["unrecorded"], status  # the leftover is reported, not hidden
    rerun = cli("aggregate", federation.hub)
    # killed before the commit: the rerun does the round; after it, before the files were
    # published: the rerun publishes them and stops; once published: the inbox is used up
    assert rerun.code == (1 if step == "aggregate:published" else 0), rerun.err
    assert round_of(federation.hub) == 1
    assert package.exists() and Path(f"{package}.sig").exists()
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay", "--json")
    assert audit.code == 0, audit.out
    assert json.loads(cli("hub", "status", federation.hub, "--json").out)["unrecorded"] == []


def test_kill_after_the_package_is_built_leaves_no_visible_package(
    federation: Federation, cli
) -> None:
    check_kill_at(federation, cli, "aggregate:built")


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS_BEFORE_COMMIT + STEPS_AFTER_COMMIT)
def test_kill_at_every_commit_step(federation: Federation, cli, step: str) -> None:
    check_kill_at(federation, cli, step)


def test_audit_and_status_report_a_package_the_log_does_not_know(
    federation: Federation, cli
) -> None:
    stray = federation.hub / "packages" / "fed-r0001.safetensors"
    stray.write_bytes((federation.hub / "packages" / "fed-r0000.safetensors").read_bytes())
    (federation.hub / "rounds" / "0003").mkdir()
    status = json.loads(cli("hub", "status", federation.hub, "--json").out)
    assert any("fed-r0001" in n for n in status["unrecorded"])
    assert any("rounds/0003" in n for n in status["unrecorded"])
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert audit.code == 3
    failed = [c for c in json.loads(audit.out)["audit"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == [
        "packages known to the log",
        "round folders known to the log",
    ]


def test_a_writer_waits_a_bounded_time_then_fails_locked_writing_nothing(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLSILO_LOCK_WAIT", "0.3")
    key = make_key(federation.root / "site-c")
    pub = Path(f"{key}.pub")
    log = federation.hub / "events.jsonl"
    before = log.read_bytes()
    ws = HubWorkspace.open(federation.hub)
    with ws.transaction("test"):
        result = cli(
            "hub", "enroll", federation.hub, "site-c", pub, "--fingerprint", fingerprint(pub)
        )
    assert result.code == 1 and "error[locked]" in result.err
    assert "waiting up to 0.3 s" in result.err
    assert log.read_bytes() == before
    assert (
        cli("hub", "enroll", federation.hub, "site-c", pub, "--fingerprint", fingerprint(pub)).code
        == 0
    )


def test_a_writer_that_waits_gets_in_once_the_lock_is_free(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLSILO_LOCK_WAIT", "30")
    key = make_key(federation.root / "site-c")
    pub = Path(f"{key}.pub")
    ws = HubWorkspace.open(federation.hub)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with ws.transaction("test"):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    threading.Timer(0.3, release.set).start()
    result = cli("hub", "enroll", federation.hub, "site-c", pub, "--fingerprint", fingerprint(pub))
    holder.join()
    assert result.code == 0, result.err
    assert "site-c" in HubWorkspace.open(federation.hub).state().active_sites()


@pytest.mark.slow
def test_concurrent_enrolments_during_aggregate_lose_no_event(federation: Federation) -> None:
    federation.carry()
    pubs = []
    for n in range(4):
        pubs.append(Path(f"{make_key(federation.root / f'site-x{n}')}.pub"))
    env = {**os.environ, "FLSILO_LOCK_WAIT": "60"}
    env.pop("FLSILO_FAULT", None)
    cmd = [sys.executable, "-m", "flsilo"]
    procs = [subprocess.Popen([*cmd, "aggregate", str(federation.hub)], env=env)]
    for n, pub in enumerate(pubs):
        procs.append(
            subprocess.Popen(
                [*cmd, "hub", "enroll", str(federation.hub), f"site-x{n}", str(pub),
                 "--fingerprint", fingerprint(pub)],
                env=env,
            )
        )  # fmt: skip
    codes = [p.wait(120) for p in procs]
    assert codes == [0] * len(procs)
    events = EventLog(federation.hub / "events.jsonl").read()  # the chain is intact
    enrolled = {e.site for _, e in of_kind(events, Enroll)}
    assert {f"site-x{n}" for n in range(4)} <= enrolled
    assert sum(e.event == "aggregate" for e in events) == 1
    state = HubWorkspace.open(federation.hub).state()
    lines = (federation.hub / "allowed_signers").read_text().splitlines()
    assert sum(line.startswith("site-x") for line in lines) == 4
    assert state.round == 1


def test_a_revoke_right_after_acceptance_keeps_the_bundle_auditable(
    federation: Federation, cli
) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    assert cli("hub", "revoke", federation.hub, "site-a").code == 0  # same second, often
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay", "--json")
    assert audit.code == 0, audit.out
    # and the revoked key is refused from now on, whatever the clock says
    ws = HubWorkspace.open(federation.hub)
    assert "site-a" not in ws.state().active_sites()


def test_a_bundle_accepted_after_the_revoke_in_the_log_fails_audit(
    federation: Federation, cli
) -> None:
    """Log order decides: an accept event placed after its key's revoke is refused by audit."""
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    log = federation.hub / "events.jsonl"
    events = EventLog(log).read()
    accept = next(ev for ev, e in of_kind(events, Accept) if e.site == "site-a")
    # rebuild the log with a revoke of site-a just before that accept (a consistent chain)
    rebuilt = federation.root / "rebuilt.jsonl"
    entries = []
    for e in events:
        if e.seq == accept.seq:
            entries.append(Revoke(site="site-a", valid_before=4102444800))
        entries.append(e.body)
    EventLog(rebuilt).append(entries)
    log.write_bytes(rebuilt.read_bytes())
    (federation.hub / "allowed_signers").unlink()
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert audit.code == 3
    failed = {
        c["name"]: c["detail"] for c in json.loads(audit.out)["audit"]["checks"] if not c["ok"]
    }
    assert "already revoked" in failed["bundle r0000 site-a"]


def test_disk_full_names_the_file_and_changes_nothing(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the first fsync of the round reports ENOSPC."""
    import errno

    federation.carry()
    before = (federation.hub / "events.jsonl").read_bytes()

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("flsilo.fs.atomic.os.fsync", full)
    result = cli("aggregate", federation.hub)
    assert result.code == 1
    assert "error[disk-full]" in result.err and str(federation.hub) in result.err
    monkeypatch.undo()
    assert (federation.hub / "events.jsonl").read_bytes() == before
    assert cli("aggregate", federation.hub).code == 0


def test_audit_runs_on_a_copy_without_the_hub_settings(
    federation: Federation, cli, tmp_path: Path
) -> None:
    import shutil

    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    copy = tmp_path / "audit-copy"
    shutil.copytree(federation.hub, copy)
    (copy / "hub.toml").unlink()
    assert cli("audit", copy, *hub_root(copy), "--replay").code == 0
    (copy / "hub.pub").write_text((federation.keys / "site-a.pub").read_text())
    result = cli("audit", copy, *hub_root(copy), "--json")
    assert result.code == 3
    failed = [c["name"] for c in json.loads(result.out)["audit"]["checks"] if not c["ok"]]
    assert failed == ["hub key copies"]


@needs_ssh_keygen
def test_stock_ssh_keygen_verifies_a_bundle_revoked_right_after_acceptance(
    federation: Federation, cli
) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    assert cli("hub", "revoke", federation.hub, "site-a").code == 0
    events = EventLog(federation.hub / "events.jsonl").read()
    ev, accept = next((ev, e) for ev, e in of_kind(events, Accept) if e.site == "site-a")
    when = ev.time.replace("-", "").replace(":", "").replace("T", "")  # YYYYMMDDHHMMSSZ
    bundle = federation.hub / "rounds" / "0000" / accept.file
    result = ssh_keygen(
        "-Y", "verify", "-f", str(federation.hub / "allowed_signers"), "-I", "site-a",
        "-n", "flsilo-bundle", "-s", f"{bundle}.sig", f"-Overify-time={when}",
        stdin=bundle.read_bytes(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.read_pause
def test_a_lock_free_reader_waits_out_a_writer_between_append_and_signature(
    federation: Federation, cli
) -> None:
    """A writer appends the log, then signs it; a reader in between is not fooled either way."""
    hub = federation.hub
    sig = hub / "events.jsonl.sig"
    before = sig.read_bytes()
    pub = Path(f"{make_key(federation.root / 'site-x')}.pub")
    assert cli("hub", "enroll", hub, "site-x", pub, "--fingerprint", fingerprint(pub)).code == 0
    after = sig.read_bytes()
    sig.write_bytes(before)  # the moment between the log's append and its new signature
    signer = threading.Timer(0.3, sig.write_bytes, args=(after,))
    signer.start()
    try:
        state = HubWorkspace.open(hub).state()
    finally:
        signer.join()
    assert "site-x" in state.active_sites()
    sig.write_bytes(before)  # and a signature that never comes is a failed check
    status = cli("hub", "status", hub)
    assert status.code == 3 and "bad-signature" in status.err


@pytest.mark.parametrize(
    "shortfall",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["round", "rejects-only"],
)
def test_every_archived_byte_is_on_disk_before_the_commit(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch, shortfall: bool
) -> None:
    """Archive and quarantine copies are synced in the background; the commit waits for all
    of them, the round's and the one that logs only the rejects of a round short of sites."""
    from hub_kit.workspace import HubTransaction

    federation.carry()
    if shortfall:  # site-b's bundle fails its signature: copied to quarantine, then logged
        bundle = federation.hub / "inbox" / federation.bundles["site-b"].name
        data = bytearray(bundle.read_bytes())
        data[-1] ^= 1
        bundle.write_bytes(bytes(data))
    synced: set[tuple[int, int]] = set()
    real_fsync, real_commit = os.fsync, HubTransaction.commit
    copies_at_commit: list[Path] = []
    unsynced_at_commit: list[str] = []

    def fsync(fd: int) -> None:
        if threading.current_thread().name.startswith("flsilo-sync"):
            threading.Event().wait(0.2)  # a slow disk: the commit must wait for it
        real_fsync(fd)
        st = os.fstat(fd)
        synced.add((st.st_dev, st.st_ino))

    def commit(self: HubTransaction, *args: object, **kwargs: object) -> object:
        staging = next(federation.hub.glob("rounds/*.staging"))
        copies = [*(staging / "archive").glob("*.safetensors")]
        copies += federation.hub.glob("quarantine/r0000/*.safetensors")
        copies_at_commit.extend(copies)
        for f in copies:
            st = f.stat()
            if (st.st_dev, st.st_ino) not in synced:
                unsynced_at_commit.append(f.name)
        return real_commit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("flsilo.fs.atomic.os.fsync", fsync)
    monkeypatch.setattr(HubTransaction, "commit", commit)
    result = cli("aggregate", federation.hub)
    assert result.code == (1 if shortfall else 0), result.err
    assert len(copies_at_commit) == 2
    assert unsynced_at_commit == []
