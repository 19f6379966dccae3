"""Hostile inbox names: a name near the file system's limit cannot stop a round, and control
or bidi characters in a name never reach the terminal raw (JSON keeps them exact)."""

from __future__ import annotations

import json
import shutil

import pytest

from hub_kit.inboxnames import MAX_NAME_BYTES, stored_name
from tests.conftest import Federation

RAW_CONTROLS = ("\x1b", "\u202e", "\x9b", "\x07", "\r")


def long_name(size: int) -> str:
    return "x" * (size - len(".safetensors")) + ".safetensors"


def assert_no_raw_controls(text: str) -> None:
    for ch in RAW_CONTROLS:
        assert ch not in text, repr(text[:400])


@pytest.mark.parametrize("size", [240, 245, 252, 255])
def test_a_name_near_the_limit_is_quarantined_shortened_and_the_round_completes(
    federation: Federation, cli, size: int
) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    name = long_name(size)
    shutil.copy(federation.bundles["site-a"], inbox / name)
    if size + 4 <= 255:  # its signature can exist too: a genuine bundle, renamed
        shutil.copy(f"{federation.bundles['site-a']}.sig", inbox / f"{name}.sig")
    hub = federation.hub
    for args in (("aggregate", hub, "--dry-run"), ("hub", "status", hub, "--inbox", inbox)):
        preview = cli(*args, "--json")
        assert preview.code == 3, preview.err  # a preview with a reject says so
        rows = {r["file"]: r for r in json.loads(preview.out)["report"]["rows"]}
        assert rows[name]["code"] == "name-too-long"
    assert cli("hub", "status", federation.hub).code == 0
    result = cli("aggregate", federation.hub, "--json")
    assert result.code == 0, result.err
    rows = {r["file"]: r for r in json.loads(result.out)["report"]["rows"]}
    assert rows[name]["verdict"] == "rejected" and rows[name]["code"] == "name-too-long"
    assert sum(r["verdict"] == "accepted" for r in rows.values()) == 2
    assert not list((federation.hub / "rounds").glob("*.staging"))
    stored = stored_name(name)
    assert len(stored.encode()) < MAX_NAME_BYTES and stored == stored_name(name)
    reason = federation.hub / "quarantine" / "r0000" / f"unread-{stored}.reason.txt"
    doc = json.loads(reason.read_text())
    assert doc["file"] == name and doc["code"] == "name-too-long"
    assert doc["stored_as"] == f"unread-{stored}"
    audit = cli("audit", federation.hub, "--json")
    assert audit.code in (0, 2), audit.out  # 2 where audit asks for its trust root


def test_a_long_name_is_refused_the_same_way_on_every_run(federation: Federation, cli) -> None:
    federation.carry("site-a")  # one site short: the round waits, rejects are logged
    name = long_name(250)
    shutil.copy(federation.bundles["site-b"], federation.hub / "inbox" / name)
    for _ in range(2):
        result = cli("aggregate", federation.hub)
        assert result.code == 1 and "error[not-enough-sites]" in result.err, result.err
        assert not list((federation.hub / "rounds").glob("*.staging"))
    reasons = list((federation.hub / "quarantine" / "r0000").glob("unread-*~*.reason.txt"))
    assert len(reasons) == 1


HOSTILE = [
    "evil\x1b[2J\x1b[31m-r0000-site-a.safetensors",
    "report\u202egpj.safetensors",
    "bell\x07\x9b31m\r.safetensors",
    "x-r0000-[red]hidden[bold].safetensors",  # rich markup, shown as typed
]


def test_control_characters_in_names_are_escaped_in_every_human_output(
    federation: Federation, cli
) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    for name in HOSTILE:
        (inbox / name).write_bytes(b"not a bundle")
    outputs = []
    for args in (
        ("aggregate", federation.hub, "--dry-run"),
        ("hub", "status", federation.hub, "--inbox", inbox),
        ("hub", "status", federation.hub),
        ("verify", *(inbox / n for n in HOSTILE), "--signers", federation.hub / "allowed_signers"),
        ("inspect", inbox / HOSTILE[0]),
        ("aggregate", federation.hub),
    ):
        result = cli(*args)
        assert result.code in (0, 1, 3, 4), result.err
        assert_no_raw_controls(result.out + result.err)
        outputs.append(result.out + result.err)
    joined = "\n".join(outputs)
    assert "evil\\x1b[2J\\x1b[31m-r0000-site-a.safetensors" in joined
    assert "report\\u202egpj.safetensors" in joined
    assert "r0000-[red]hidden[bold]" in outputs[0]  # the dry run's table, as typed
    assert "x-r0000-[red]hidden[bold].safetensors" in outputs[3]  # verify's table
    # JSON keeps the exact names (JSON escapes are not terminal controls)
    doc = json.loads(cli("aggregate", federation.hub, "--dry-run", "--json").out)
    assert set(HOSTILE) <= {r["file"] for r in doc["report"]["rows"]}
    # an error line about such a file is still one line
    single = cli("verify", inbox / HOSTILE[2], "--signers", federation.hub / "allowed_signers")
    assert single.code == 3 and len(single.err.strip().splitlines()) == 1, single.err


def test_a_reason_file_records_a_hostile_name_escaped(federation: Federation, cli) -> None:
    federation.carry()
    (federation.hub / "inbox" / HOSTILE[0]).write_bytes(b"not a bundle")
    assert cli("aggregate", federation.hub).code == 0
    reasons = list((federation.hub / "quarantine" / "r0000").glob("*.reason.txt"))
    text = reasons[0].read_text()
    assert "\x1b" not in text and "\\u001b" in text
    assert json.loads(text)["file"] == HOSTILE[0]
