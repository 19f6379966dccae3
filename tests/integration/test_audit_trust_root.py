"""``audit``'s trust root comes from outside the workspace (issue 19 item 1).

Someone with write access to the hub folder and no hub key forges a rotation or swaps the
init key and re-signs everything with a key of their own: ``audit`` given the fingerprint
the auditor confirmed, and the guide's stock recipe, both fail. Honest rotations still pass
from the original fingerprint and from the rotated-to key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from flsilo.cli.app import run
from flsilo.signing.keys import PrivateKey, PublicKey, load_private_key, load_public_key
from flsilo.signing.rotation import make_rotation
from flsilo.signing.sshsig import PACKAGE_NAMESPACE, sign_digest
from hub_kit.anchor import sign_log
from hub_kit.eventlog import EventLog
from hub_kit.state import fold, render_allowed_signers
from tests.conftest import Federation, fingerprint, make_key, needs_ssh_keygen
from tests.integration.test_auditor_recipe import run_recipe

JUNK_SIG = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n"


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


def mallory(fed: Federation) -> tuple[PrivateKey, PublicKey]:
    path = fed.root / "mallory"
    if not path.exists():
        make_key(path)
    return load_private_key(path, lambda _p: b""), load_public_key(path.with_suffix(".pub"))


def take_over(fed: Federation, key: PrivateKey, pub: PublicKey, packages: list[Path]) -> None:
    """What the attacker does after editing the log: every key claim and signature made theirs."""
    state = fold(EventLog(fed.hub / "events.jsonl").read())
    (fed.hub / "allowed_signers").write_text(render_allowed_signers(state))
    (fed.hub / "hub.pub").write_text(pub.openssh_line() + "\n")
    settings = fed.hub / "hub.toml"
    settings.write_text(
        settings.read_text().replace(fingerprint(fed.keys / "hub.pub"), pub.fingerprint)
    )
    for package in packages:
        digest = hashlib.sha256(package.read_bytes()).digest()
        Path(f"{package}.sig").write_bytes(sign_digest(key, PACKAGE_NAMESPACE, digest))
    sign_log(fed.hub / "events.jsonl", key)


def audit_json(cli, hub: Path, *args: object) -> tuple[int, dict]:
    result = cli("audit", hub, *args, "--json")
    doc = json.loads(result.out)
    assert doc["exit_code"] == result.code
    return result.code, doc["audit"]


def failed(audit: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in audit["checks"] if not c["ok"]}


@pytest.fixture(scope="module")
def aggregated_template(
    federation_template: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Federation:
    """Round 0 aggregated, once for the module: each test changes a copy of it."""
    fed = federation_template.copy(tmp_path_factory.mktemp("aggregated") / "fed")
    fed.carry()
    assert run(["aggregate", str(fed.hub)]) == 0
    return fed


@pytest.fixture
def aggregated(aggregated_template: Federation, tmp_path: Path) -> Federation:
    return aggregated_template.copy(tmp_path / "fed")


def forge_rotation(fed: Federation, statement: str) -> None:
    """A rotate-key event to the attacker's key with a statement of their making, a forged
    enrolment, and everything re-signed with their key."""
    key, pub = mallory(fed)
    records = lines(fed.hub)
    rotate = {
        "event": "rotate-key",
        "time": records[-1]["time"],
        "statement": statement,
        "old_signature": JUNK_SIG,
        "new_signature": JUNK_SIG,
        "hub_key": pub.openssh_line(),
        "fingerprint": pub.fingerprint,
    }
    enrol = dict(next(r for r in records if r["event"] == "enroll"))
    enrol.update(site="site-m", key=pub.openssh_line(), fingerprint=pub.fingerprint)
    rewrite(fed.hub, [*records, rotate, enrol])
    take_over(fed, key, pub, [fed.hub / "packages" / "fed-r0001.safetensors"])


def statement_signed_by_mallory_alone(fed: Federation) -> str:
    """A well-formed statement from the real key to the attacker's, which only the attacker's
    key could sign: both signatures by mallory (one of them claiming to be the old key's)."""
    key, _pub = mallory(fed)
    return make_rotation(key, key, "fed", 1).statement


@pytest.mark.parametrize("statement", ["{}", "not json", "forged-well-formed"])
def test_forged_rotation_fails_audit_replay_against_and_the_stock_recipe(
    aggregated: Federation, cli, statement: str
) -> None:
    fed = aggregated
    real = fingerprint(fed.keys / "hub.pub")
    newest = fed.root / "kept-r0001.safetensors"
    shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors", newest)
    if statement == "forged-well-formed":
        statement = statement_signed_by_mallory_alone(fed)
    forge_rotation(fed, statement)
    for extra in ((), ("--replay",), ("--against", newest)):
        code, audit = audit_json(cli, fed.hub, "--hub-fingerprint", real, *extra)
        assert code == 3
        why = failed(audit)
        assert "hub key rotations" in why, why
        assert "rotation 1" in why["hub key rotations"]
        assert "rotation-broken" not in why["hub key rotations"]  # words, not a code
        assert audit["trust_root"]["fingerprint"] == real
    shown = cli("audit", fed.hub, "--hub-fingerprint", real)
    assert shown.code == 3 and "hub key rotations" in shown.out and "audit FAILED" in shown.out


@needs_ssh_keygen
def test_stock_recipe_fails_on_a_hub_rewritten_with_a_key_the_auditor_never_confirmed(
    aggregated: Federation,
) -> None:
    fed = aggregated
    assert run_recipe(fed).stdout.rstrip().endswith("PASS")
    forge_rotation(fed, "{}")
    bad = run_recipe(fed)
    assert bad.returncode != 0 and bad.stdout.rstrip().endswith("FAIL")
    assert "hub.pub is not the hub key you confirmed" in bad.stdout
    # the attacker leaves hub.pub alone: the log and package signatures fail instead
    shutil.copy(fed.keys / "hub.pub", fed.hub / "hub.pub")
    again = run_recipe(fed)
    assert again.returncode != 0 and again.stdout.rstrip().endswith("FAIL")


def swap_init_key(fed: Federation) -> None:
    """The init event names the attacker's key; the chain, every package, the log re-signed."""
    key, pub = mallory(fed)
    records = lines(fed.hub)
    assert records[0]["event"] == "init"
    records[0] = {**records[0], "hub_key": pub.openssh_line()}
    if "fingerprint" in records[0]:
        records[0]["fingerprint"] = pub.fingerprint
    rewrite(fed.hub, records)
    take_over(fed, key, pub, sorted((fed.hub / "packages").glob("*.safetensors")))


def test_swapped_init_key_fails_audit_and_replay(aggregated: Federation, cli) -> None:
    fed = aggregated
    real = fingerprint(fed.keys / "hub.pub")
    swap_init_key(fed)
    for args in (("--hub-fingerprint", real), ("--hub-key", fed.keys / "hub.pub")):
        for extra in ((), ("--replay",)):
            code, audit = audit_json(cli, fed.hub, *args, *extra)
            assert code == 3
            why = failed(audit)
            assert list(why) == ["trust root"], why
            assert "is neither the init event's hub key" in why["trust root"]
            assert audit["trust_root"]["reached"] is None
            # nothing is judged by a key the auditor did not confirm
            assert not any(c["name"].startswith("package r") for c in audit["checks"])


@needs_ssh_keygen
def test_stock_recipe_fails_on_a_swapped_init_key(aggregated: Federation) -> None:
    fed = aggregated
    swap_init_key(fed)
    bad = run_recipe(fed)
    assert bad.returncode != 0 and bad.stdout.rstrip().endswith("FAIL")


def test_audit_without_a_trust_root_is_a_usage_error(federation: Federation, cli) -> None:
    plain = cli("audit", federation.hub)
    assert plain.code == 2
    assert "audit-trust-root" in plain.err
    assert "over the phone" in plain.err and "flsilo keys fingerprint hub.pub" in plain.err
    real = fingerprint(federation.keys / "hub.pub")
    both = cli("audit", federation.hub, "--hub-fingerprint", real, "--hub-key", "x.pub")
    assert both.code == 2 and "not both" in both.err
    garbled = cli("audit", federation.hub, "--hub-fingerprint", "SHA256:short")
    assert garbled.code == 2 and "audit-trust-root" in garbled.err
    # the prefix may be left out, as a person reads it
    assert cli("audit", federation.hub, "--hub-fingerprint", real.removeprefix("SHA256:")).code == 0


def test_a_key_the_log_never_names_fails_the_trust_root(federation: Federation, cli) -> None:
    stranger = make_key(federation.root / "stranger").with_suffix(".pub")
    code, audit = audit_json(cli, federation.hub, "--hub-key", stranger)
    assert code == 3 and list(failed(audit)) == ["trust root"]
    assert audit["trust_root"] == {
        "fingerprint": fingerprint(stranger),
        "given": "--hub-key",
        "file": str(stranger),
        "reached": None,
    }


def test_rotations_pass_from_the_original_fingerprint_and_from_each_rotated_to_key(
    aggregated: Federation, cli
) -> None:
    fed = aggregated
    original = fingerprint(fed.keys / "hub.pub")
    second = make_key(fed.keys / "hub-2", "ecdsa-p256")
    third = make_key(fed.keys / "hub-3")
    assert cli("hub", "rotate-key", fed.hub, "--new-key", second).code == 0
    code, audit = audit_json(cli, fed.hub, "--hub-fingerprint", original)
    assert code == 0, failed(audit)
    rotations = next(c for c in audit["checks"] if c["name"] == "hub key rotations")
    assert rotations["detail"].startswith("1 statements")
    assert cli("hub", "rotate-key", fed.hub, "--new-key", third).code == 0
    roots = {
        ("--hub-fingerprint", original): "the init key",
        ("--hub-key", fed.keys / "hub-2.pub"): "rotation 1",
        ("--hub-fingerprint", fingerprint(fed.keys / "hub-3.pub")): "rotation 2",
    }
    for args, reached in roots.items():
        code, audit = audit_json(cli, fed.hub, *args, "--replay")
        assert code == 0, failed(audit)
        assert audit["trust_root"]["reached"] == reached
        assert audit["trust_root"]["given"] == args[0]
    # a genuine statement cannot be moved: swapping the two rotations breaks the chain
    records = lines(fed.hub)
    at = [i for i, r in enumerate(records) if r["event"] == "rotate-key"]
    records[at[0]], records[at[1]] = records[at[1]], records[at[0]]
    rewrite(fed.hub, records)
    code, audit = audit_json(cli, fed.hub, "--hub-fingerprint", original)
    assert code == 3 and "hub key rotations" in failed(audit)


@pytest.mark.parametrize("drop", ["statement", "hub_key"])
def test_a_rotate_key_event_missing_a_field_is_a_failed_check_not_a_crash(
    aggregated: Federation, cli, drop: str
) -> None:
    fed = aggregated
    forge_rotation(fed, "{}")
    records = lines(fed.hub)
    del next(r for r in records if r["event"] == "rotate-key")[drop]
    rewrite(fed.hub, records)
    code, audit = audit_json(cli, fed.hub, "--hub-fingerprint", fingerprint(fed.keys / "hub.pub"))
    assert code == 3 and list(failed(audit)) == ["event log chain"]


def test_hub_init_prints_the_fingerprint_the_auditor_needs(tmp_path: Path, cli) -> None:
    key = make_key(tmp_path / "hub-key")
    init = cli(
        "hub", "init", tmp_path / "hub", "--federation", "fed", "--model", "logreg",
        "--classes", "a,b", "--input-shape", "4", "--key", key, "--json",
    )  # fmt: skip
    assert init.code == 0, init.err
    given = json.loads(init.out)["hub_fingerprint"]
    assert given == fingerprint(tmp_path / "hub-key.pub")
    assert cli("audit", tmp_path / "hub", "--hub-fingerprint", given).code == 0
