"""Plain ``audit`` checks the server optimizer's state files against the log (issue 19 item 6),
and a log cut after an older package's round is caught by what the workspace still holds
(issue 19 item 1, ``--against`` an older package)."""

from __future__ import annotations

import json
import shutil

import pytest

from flsilo.cli.app import run
from hub_kit.eventlog import EventLog
from hub_kit.state import fold, render_allowed_signers
from tests.conftest import Federation, fingerprint

STATE = "state"


def next_round(fed: Federation, round_: int) -> None:
    """Every site trains on package ``round_`` and carries its bundle to the hub inbox."""
    name = f"fed-r{round_:04d}.safetensors"
    for site_dir in fed.sites.values():
        for suffix in ("", ".sig"):
            shutil.copy(fed.hub / "packages" / f"{name}{suffix}", site_dir / "packages")
        assert run(["train", str(site_dir / "packages" / name), "--site", str(site_dir)]) == 0
        for f in (site_dir / "outbox").glob(f"fed-r{round_:04d}-*"):
            shutil.copy(f, fed.hub / "inbox")


def audit(cli, fed: Federation, *args: object) -> tuple[int, dict[str, str]]:
    result = cli(
        "audit", fed.hub, "--hub-fingerprint", fingerprint(fed.keys / "hub.pub"), *args, "--json"
    )
    checks = json.loads(result.out)["audit"]["checks"]
    return result.code, {c["name"]: c["detail"] for c in checks if not c["ok"]}


@pytest.fixture(scope="module")
def momentum_template(
    federation_template: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Federation:
    """Two rounds with server momentum; the log signature after the first is kept (a backup).
    Built once for the module: each test changes a copy of it."""
    fed = federation_template.copy(tmp_path_factory.mktemp("momentum") / "fed")
    fed.carry()
    assert run(["aggregate", str(fed.hub), "--server-optimizer", "fedavgm"]) == 0
    shutil.copy(fed.hub / "events.jsonl.sig", fed.root / "r0001-log.sig")
    next_round(fed, 1)
    assert run(["aggregate", str(fed.hub), "--server-optimizer", "fedavgm"]) == 0
    for suffix in ("", ".sig"):  # a site keeps both packages
        for round_ in (1, 2):
            name = f"fed-r{round_:04d}.safetensors{suffix}"
            shutil.copy(fed.hub / "packages" / name, fed.root / name)
    return fed


@pytest.fixture
def momentum(momentum_template: Federation, tmp_path) -> Federation:
    return momentum_template.copy(tmp_path / "fed")


def test_plain_audit_checks_each_state_file_against_the_log(momentum: Federation, cli) -> None:
    fed = momentum
    assert audit(cli, fed) == (0, {})
    state = fed.hub / STATE / "fed-r0002-server.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 1
    state.write_bytes(bytes(data))
    code, failed = audit(cli, fed)  # no --replay
    assert code == 3
    assert failed == {
        "server state fed-r0002-server.safetensors": (
            "state/fed-r0002-server.safetensors is missing or differs from the digest in the log"
        )
    }
    state.unlink()
    assert audit(cli, fed)[1].keys() == {"server state fed-r0002-server.safetensors"}


def cut_last_round(fed: Federation) -> None:
    """Cut the second aggregation from the log, put the log signature from before it back, and
    remove every package and round folder the shortened log does not know."""
    log = fed.hub / "events.jsonl"
    records = log.read_text().splitlines(keepends=True)
    last_aggregate = max(i for i, x in enumerate(records) if '"event":"aggregate"' in x)
    first_of_round = min(
        i
        for i, x in enumerate(records)
        if json.loads(x).get("round") == 1 and json.loads(x)["event"] in ("accept", "reject")
    )
    assert first_of_round < last_aggregate == len(records) - 1
    log.write_text("".join(records[:first_of_round]))
    shutil.copy(fed.root / "r0001-log.sig", fed.hub / "events.jsonl.sig")
    state = fold(EventLog(log).read())
    (fed.hub / "allowed_signers").write_text(render_allowed_signers(state))
    for f in (fed.hub / "packages").glob("fed-r0002*"):
        f.unlink()
    shutil.rmtree(fed.hub / "rounds" / "0001")


def test_a_cut_after_an_older_package_is_caught_by_the_state_it_left(
    momentum: Federation, cli
) -> None:
    fed = momentum
    older = fed.root / "fed-r0001.safetensors"
    assert audit(cli, fed, "--against", older) == (0, {})
    cut_last_round(fed)
    code, failed = audit(cli, fed, "--against", older)
    assert code == 3
    assert list(failed) == ["server state files known to the log"]
    assert "fed-r0002-server.safetensors" in failed["server state files known to the log"]
    # every trace of the cut round removed: only a package kept from after it tells
    (fed.hub / STATE / "fed-r0002-server.safetensors").unlink()
    code, failed = audit(cli, fed, "--against", fed.root / "fed-r0002.safetensors")
    assert code == 3 and list(failed) == ["against fed-r0002.safetensors"]


def test_a_killed_attempts_staging_folder_does_not_fail_audit(federation, cli) -> None:
    """A SIGKILL during aggregate leaves rounds/NNNN.staging of an uncommitted round: it
    holds nothing anyone trusts, so audit notes it and passes; the next aggregate discards it."""
    import json as _json

    from tests.conftest import hub_root

    left = federation.hub / "rounds" / "0000.staging" / "archive"
    left.mkdir(parents=True)
    (left / "fed-r0000-site-a.safetensors").write_bytes(b"half a copy")
    result = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert result.code == 0, result.out
    checks = {c["name"]: c for c in _json.loads(result.out)["audit"]["checks"]}
    assert "uncommitted attempt" in checks["round folders known to the log"]["detail"]
    # a published round folder the log does not know still fails
    (federation.hub / "rounds" / "0007").mkdir()
    assert cli("audit", federation.hub, *hub_root(federation.hub)).code == 3
