"""``flsilo hub history``: the per-round table comes from the event log alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import Federation, tree_digest


def test_history_reports_verdicts_shares_and_accuracy(federation: Federation, cli) -> None:
    federation.carry()
    inbox = federation.hub / "inbox"
    bad = inbox / "fed-r0000-site-z.safetensors"
    shutil.copy(federation.bundles["site-a"], bad)
    shutil.copy(f"{federation.bundles['site-a']}.sig", f"{bad}.sig")
    data = bytearray(bad.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    assert cli("aggregate", federation.hub).code == 0

    before = tree_digest(federation.hub)
    result = cli("hub", "history", federation.hub, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    (round0,) = doc["rounds"]
    assert isinstance(doc["warnings"], list) and round0["at_chance"] is False
    assert round0["package"] == "fed-r0001.safetensors"
    accepted = [s for s in round0["sites"] if s["verdict"] == "accepted"]
    rejected = [s for s in round0["sites"] if s["verdict"] != "accepted"]
    assert [s["site"] for s in accepted] == ["site-a", "site-b"]
    assert abs(sum(s["share"] for s in accepted) - 1) < 1e-9
    assert accepted[0]["samples"] > accepted[1]["samples"]  # 300 vs 200 records, 0.8 train
    assert accepted[0]["share"] > accepted[1]["share"]  # fedavg weighs by samples
    assert all(0 <= s["accuracy_after"] <= 1 for s in accepted)
    assert len(rejected) == 1 and rejected[0]["verdict"].startswith("rejected: ")

    table = cli("hub", "history", federation.hub)
    assert table.code == 0 and "site-a" in table.out and "→ fed-r0001" in table.out
    assert max(len(line) for line in table.out.splitlines()) <= 80
    assert tree_digest(federation.hub) == before  # reading history changes nothing


def test_history_png_needs_nothing_but_the_log(federation: Federation, cli, tmp_path: Path) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    png = tmp_path / "history.png"
    result = cli("hub", "history", federation.hub, "--png", png)
    assert result.code == 0, result.err
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    empty = cli("hub", "history", federation.hub.parent / "nope")
    assert empty.code != 0 and "Traceback" not in empty.err


def test_the_aggregate_report_carries_the_historys_warnings(federation: Federation, cli) -> None:
    federation.carry()
    result = cli("aggregate", federation.hub, "--json")
    assert result.code == 0, result.err
    notes = json.loads(result.out)["report"]["learning_warnings"]
    assert any("under 30 samples at site-b" in n for n in notes)  # 20 validation samples
    text = cli("aggregate", federation.hub, "--dry-run")
    assert "warning: validation splits under 30 samples at site-b" in text.err
