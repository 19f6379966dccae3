"""Input summaries travel in bundles; the hub flags a site whose inputs are unlike the others'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from flsilo.format.artifact import scan_file
from tests.conftest import Federation


def _rows(cli, federation: Federation) -> dict[str, dict]:
    result = cli("aggregate", federation.hub, "--dry-run", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)["report"]
    return {r["site"]: r["input_drift"] for r in report["rows"] if r["verdict"] == "accepted"}


def test_bundles_carry_a_summary_and_alike_sites_are_not_flagged(
    federation: Federation, cli
) -> None:
    summary = scan_file(federation.bundles["site-a"]).manifest.bundle.inputs
    assert summary is not None and summary.samples == 270  # the training split
    assert len(summary.channel_mean) == 64 and summary.bad_share == 0.0
    federation.carry()
    drift = _rows(cli, federation)
    assert set(drift) == {"site-a", "site-b"}
    assert not any(d["flagged"] for d in drift.values())
    assert all(d["distance"] < 1.0 for d in drift.values())


def test_a_site_that_inverts_its_inputs_is_flagged(
    federation: Federation, cli, tmp_path: Path
) -> None:
    with np.load(federation.data["site-b"]) as npz:
        x, y = npz["x"], npz["y"]
    inverted = tmp_path / "b-inverted.npz"
    np.savez(inverted, x=x.max() - x, y=y)
    site = federation.sites["site-b"]
    for f in (site / "outbox").iterdir():
        f.unlink()  # train round 0 again, on inverted data
    shutil.rmtree(site / "work", ignore_errors=True)
    state = json.loads((site / "state.json").read_text())
    state["last_round"] = -1
    state["packages"] = {}
    (site / "state.json").write_text(json.dumps(state))
    trained = cli(
        "train", site / "packages" / "fed-r0000.safetensors", "--site", site, "--data", inverted
    )
    assert trained.code == 0, trained.err
    federation.bundles["site-b"] = site / "outbox" / "fed-r0000-site-b.safetensors"
    federation.carry()
    drift = _rows(cli, federation)
    assert drift["site-b"]["flagged"] and drift["site-b"]["distance"] > 1.0
    assert "the other site's" in drift["site-b"]["hint"]
    text = cli("aggregate", federation.hub, "--dry-run")
    assert "input drift: site-b's inputs are" in text.err
