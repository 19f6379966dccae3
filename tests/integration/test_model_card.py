"""``flsilo report``: the model card, built only from evidence that verifies."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flsilo.cli.app import run
from flsilo.signing import evalreport as er
from tests.conftest import Federation, digits_npz, fingerprint, needs_ssh_keygen, tree_digest

CHROMIUM = next(
    (
        p
        for p in map(shutil.which, ("chromium-headless-shell", "chromium", "chromium-browser"))
        if p
    ),
    None,
)


HELD_OUT = 60  # records in site-a's report: the card shows the figures, whatever they are


@pytest.fixture(scope="module")
def _reported_round(
    federation_template: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Federation:
    """Round 0 aggregated with site-a's signed report on package r0000 beside the bundles,
    made once for this file from a copy of the session's federation."""
    federation = federation_template.copy(tmp_path_factory.mktemp("card") / "fed")
    ws = federation.sites["site-a"]
    held_out = digits_npz(federation.root / "held-out.npz", np.arange(1500, 1500 + HELD_OUT))
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(["evaluate", str(ws / "packages" / "fed-r0000.safetensors"), "--site",
                    str(ws), "--data", str(held_out), "--report"]) == 0  # fmt: skip
    federation.carry()
    report = ws / "outbox" / "r0000-site-a.eval.json"
    for f in (report, er.sig_of(report)):
        shutil.copy(f, federation.hub / "inbox" / f.name)
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(["aggregate", str(federation.hub)]) == 0
    return federation


@pytest.fixture
def reported(_reported_round: Federation, tmp_path: Path) -> tuple[Federation, Path]:
    """A private copy of :func:`_reported_round` and its package r0001."""
    federation = _reported_round.copy(tmp_path / "fed")
    return federation, federation.hub / "packages" / "fed-r0001.safetensors"


def _card(cli, federation: Federation, package: Path, out: Path) -> object:
    return cli(
        "report", package, "--hub", federation.hub, "--out", out,
        "--hub-fingerprint", fingerprint(federation.keys / "hub.pub"),
    )  # fmt: skip


def test_the_card_holds_the_verified_evidence(reported, cli, tmp_path: Path) -> None:
    federation, package = reported
    before = tree_digest(federation.hub)
    out = tmp_path / "card"
    result = _card(cli, federation, package, out)
    assert result.code == 0, result.err
    assert tree_digest(federation.hub) == before  # the card changes nothing at the hub
    doc = json.loads((out / "card.json").read_text())
    assert doc["package"]["round"] == 1 and doc["audit"]["ok"] is True
    assert [p["round"] for p in doc["lineage"]] == [0, 1]
    assert doc["lineage"][1]["parent_sha256"] == doc["lineage"][0]["sha256"]
    (evaluation,) = doc["evaluations"]
    assert evaluation["site"] == "site-a" and evaluation["samples"] == HELD_OUT
    assert [s["site"] for s in doc["rounds"][0]["sites"]] == ["site-a", "site-b"]
    md = (out / "card.md").read_text()
    assert "## Performance at each site" in md and "site-a" in md
    assert "ssh-keygen -Y verify" in md and "flsilo audit . --hub-fingerprint SHA256:" in md
    page = (out / "card.html").read_text()
    # self-contained: no script, and every src/href is inline data or a fragment
    assert "<script" not in page.lower()
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(link.startswith(("data:", "#")) for link in links)


def test_one_changed_byte_of_a_report_refuses_the_card(reported, cli, tmp_path: Path) -> None:
    federation, package = reported
    archived = federation.hub / "rounds" / "0000" / "r0000-site-a.eval.json"
    data = bytearray(archived.read_bytes())
    data[data.index(b'"samples":60') + 11] = ord("1")
    archived.write_bytes(bytes(data))
    out = tmp_path / "card"
    result = _card(cli, federation, package, out)
    assert result.code == 3 and "card-evidence" in result.err
    assert not out.exists()


def test_a_card_needs_the_trust_root_and_a_package_of_this_hub(
    federation: Federation, cli, tmp_path: Path
) -> None:
    package = federation.hub / "packages" / "fed-r0000.safetensors"
    bare = cli("report", package, "--hub", federation.hub, "--out", tmp_path / "c")
    assert bare.code == 2
    stray = tmp_path / "elsewhere.safetensors"
    shutil.copy(package, stray)
    shutil.copy(f"{package}.sig", f"{stray}.sig")
    foreign = _card(cli, federation, stray, tmp_path / "c2")
    assert foreign.code == 3 and "card-evidence" in foreign.err


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed: card.html not rendered"
)
def test_the_card_renders_in_a_real_browser(reported, cli, tmp_path: Path) -> None:
    federation, package = reported
    out = tmp_path / "card"
    assert _card(cli, federation, package, out).code == 0
    assert CHROMIUM is not None
    shot = tmp_path / "card.png"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run(
        [*common, "--dump-dom", (out / "card.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Performance at each site" in dom.stdout and "<table>" in dom.stdout
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1100,1400", (out / "card.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.read_bytes().startswith(b"\x89PNG")


@needs_ssh_keygen
def test_the_cards_stock_commands_run_as_printed(reported, cli, tmp_path: Path) -> None:
    federation, package = reported
    out = tmp_path / "card"
    assert _card(cli, federation, package, out).code == 0
    md = (out / "card.md").read_text()
    block = md.split("## Check every claim yourself", 1)[1].split("```")[1]
    stock = [line for line in block.strip().splitlines() if not line.startswith("flsilo ")]
    script = "set -euo pipefail\n" + "\n".join(stock)
    ran = subprocess.run(
        ["bash", "-c", script], cwd=federation.hub, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert 'Good "flsilo-package" signature' in ran.stderr + ran.stdout
    assert "site-a" in ran.stdout  # find-principals names the report's signer
