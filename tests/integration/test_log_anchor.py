"""The anchored log: every attack of issue 12's attack run is caught (each is one test)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from flsilo.cli.app import run
from flsilo.signing.keys import load_private_key, load_public_key
from hub_kit.anchor import sign_log
from hub_kit.state import fold, render_allowed_signers
from tests.conftest import Federation, hub_root, make_key


def lines(hub: Path) -> list[dict]:
    return [json.loads(x) for x in (hub / "events.jsonl").read_text().splitlines()]


def rewrite(hub: Path, records: list[dict]) -> None:
    """Write ``records`` as a log with a freshly recomputed hash chain (what an attacker does)."""
    prev, out = "0" * 64, b""
    for seq, record in enumerate(records, start=1):
        record = {**record, "seq": seq, "prev": prev}
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        prev = hashlib.sha256(line).hexdigest()
        out += line + b"\n"
    (hub / "events.jsonl").write_bytes(out)


def regenerate_signers(hub: Path) -> None:
    from hub_kit.eventlog import EventLog

    state = fold(EventLog(hub / "events.jsonl").read())
    (hub / "allowed_signers").write_text(render_allowed_signers(state))


def failed_checks(cli, hub: Path, *args: object) -> list[str]:
    result = cli("audit", hub, *hub_root(hub), "--json", *args)
    checks = json.loads(result.out)["audit"]["checks"]
    failed = [c["name"] for c in checks if not c["ok"]]
    assert (result.code == 0) == (not failed)
    return failed


@pytest.fixture(scope="module")
def round_done_template(
    federation_template: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Federation:
    """Round 0 aggregated; site-a keeps both packages; the log signature before it is saved.
    Built once for the module: each test changes a copy of it."""
    fed = federation_template.copy(tmp_path_factory.mktemp("round-done") / "fed")
    shutil.copy(fed.hub / "events.jsonl.sig", fed.root / "old-log.sig")
    fed.carry()
    assert run(["aggregate", str(fed.hub)]) == 0
    keep = fed.root / "kept"
    keep.mkdir()
    for name in ("fed-r0000.safetensors", "fed-r0001.safetensors"):
        for suffix in ("", ".sig"):
            shutil.copy(fed.hub / "packages" / f"{name}{suffix}", keep)
    return fed


@pytest.fixture
def round_done(round_done_template: Federation, tmp_path: Path) -> Federation:
    return round_done_template.copy(tmp_path / "fed")


def kept(fed: Federation, round_: int) -> Path:
    return fed.root / "kept" / f"fed-r{round_:04d}.safetensors"


def test_honest_hub_passes_against_every_package_it_issued(round_done: Federation, cli) -> None:
    fed = round_done
    assert failed_checks(cli, fed.hub, "--against", kept(fed, 0), "--against", kept(fed, 1)) == []
    stock = shutil.which("ssh-keygen")
    if stock:
        import subprocess

        log = fed.hub / "events.jsonl"
        ok = subprocess.run(
            [
                stock,
                "-Y",
                "verify",
                "-f",
                str(fed.hub / "allowed_signers"),
                "-I",
                "hub",
                "-n",
                "flsilo-log",
                "-s",
                f"{log}.sig",
            ],
            input=log.read_bytes(),
            capture_output=True,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_cut_tail_is_caught_even_with_an_older_genuine_signature(
    round_done: Federation, cli, cut: int
) -> None:
    fed = round_done
    log = fed.hub / "events.jsonl"
    log.write_text("".join(x + "\n" for x in log.read_text().splitlines()[:-cut]))
    assert "event log signature" in failed_checks(cli, fed.hub)
    status = cli("hub", "status", fed.hub)
    assert status.code == 3 and "bad-signature" in status.err
    if cut == 3:  # the whole round: put the genuine signature of that older log back
        shutil.copy(fed.root / "old-log.sig", fed.hub / "events.jsonl.sig")
        regenerate_signers(fed.hub)
        assert failed_checks(cli, fed.hub) == [
            "packages known to the log",
            "round folders known to the log",  # rounds/0000 is no committed round either
        ]
        for f in (fed.hub / "packages").glob("fed-r0001*"):
            f.unlink()  # and hide the newest package: only the one a site kept tells
        shutil.rmtree(fed.hub / "rounds" / "0000")
        assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0
        assert failed_checks(cli, fed.hub, "--against", kept(fed, 1)) == [
            "against fed-r0001.safetensors"
        ]


def test_forged_enroll_with_recomputed_chain_is_caught(round_done: Federation, cli) -> None:
    fed = round_done
    outsider = load_public_key(make_key(fed.root / "mallory").with_suffix(".pub"))
    records = lines(fed.hub)
    forged = dict(records[1], site="mallory", key=outsider.openssh_line())
    forged["fingerprint"] = outsider.fingerprint
    rewrite(fed.hub, [*records[:2], forged, *records[2:]])
    regenerate_signers(fed.hub)
    assert "event log signature" in failed_checks(cli, fed.hub, "--replay")
    fed.carry()
    refused = cli("aggregate", fed.hub)
    assert refused.code == 3 and "bad-signature" in refused.err


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda r: r[1].update(time="2020-01-01T00:00:00Z"), id="changed-time"),
        pytest.param(
            lambda r: r[1].update(fingerprint="SHA256:" + "A" * 43), id="changed-fingerprint"
        ),
        pytest.param(lambda r: r.insert(1, r.pop(2)), id="reordered-events"),
    ],
)
def test_rewritten_history_is_caught_by_the_signed_head(
    round_done: Federation, cli, mutate
) -> None:
    fed = round_done
    records = lines(fed.hub)
    mutate(records)
    rewrite(fed.hub, records)
    regenerate_signers(fed.hub)
    assert "event log signature" in failed_checks(cli, fed.hub)
    for command in ("status", "history"):  # every hub command checks the signed head
        assert cli("hub", command, fed.hub).code == 3


def test_history_rewritten_with_the_hubs_own_key_is_caught_by_against(
    round_done: Federation, cli
) -> None:
    fed = round_done
    records = lines(fed.hub)
    records[1]["time"] = "2020-01-01T00:00:00Z"  # an enrolment backdated by the hub itself
    rewrite(fed.hub, records)
    regenerate_signers(fed.hub)
    sign_log(fed.hub / "events.jsonl", load_private_key(fed.keys / "hub", lambda _p: b""))
    assert failed_checks(cli, fed.hub) == []  # the hub's own key makes it look fine...
    assert failed_checks(cli, fed.hub, "--against", kept(fed, 1)) == [
        "against fed-r0001.safetensors"  # ...but not to a package a site kept
    ]
    foreign = make_key(fed.root / "other-hub")
    sign_log(fed.hub / "events.jsonl", load_private_key(foreign, lambda _p: b""))
    assert "event log signature" in failed_checks(cli, fed.hub)


def test_an_interrupted_commit_is_re_signed_with_stock_ssh_keygen(
    round_done: Federation, cli
) -> None:
    from tests.conftest import SSH_KEYGEN, ssh_keygen

    if SSH_KEYGEN is None:
        pytest.skip("ssh-keygen is not installed")
    fed = round_done
    (fed.hub / "events.jsonl.sig").unlink()  # a crash between the log's commit and its signature
    refused = cli("hub", "status", fed.hub)
    assert refused.code == 3 and "log-unsigned" in refused.err
    assert "If a command was interrupted" in " ".join(refused.err.split())  # the guide's section
    signed = ssh_keygen(
        "-Y", "sign", "-f", str(fed.keys / "hub"), "-n", "flsilo-log", str(fed.hub / "events.jsonl")
    )
    assert signed.returncode == 0, signed.stderr
    assert cli("hub", "status", fed.hub).code == 0
    assert failed_checks(cli, fed.hub) == []
