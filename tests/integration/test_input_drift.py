"""Input summaries travel in bundles; the hub flags a site whose inputs are unlike the others'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.format.artifact import scan_file
from tests.conftest import Federation


def _rows(cli, federation: Federation) -> dict[str, dict]:
    result = cli("aggregate", federation.hub, "--dry-run", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)["report"]
    return {r["site"]: r["input_drift"] for r in report["rows"] if r["verdict"] == "accepted"}


def _train_site_b_again(cli, federation: Federation, data: Path) -> None:
    """Site-b trains round 0 again, on ``data``, and both bundles are carried to the hub."""
    site = federation.sites["site-b"]
    for f in (site / "outbox").iterdir():
        f.unlink()
    shutil.rmtree(site / "work", ignore_errors=True)
    state = json.loads((site / "state.json").read_text())
    state["last_round"] = -1
    state["packages"] = {}
    (site / "state.json").write_text(json.dumps(state))
    trained = cli(
        "train", site / "packages" / "fed-r0000.safetensors", "--site", site, "--data", data
    )
    assert trained.code == 0, trained.err
    federation.bundles["site-b"] = site / "outbox" / "fed-r0000-site-b.safetensors"
    federation.carry()


def test_bundles_carry_a_summary_and_alike_sites_are_not_flagged(
    federation: Federation, cli
) -> None:
    summary = scan_file(federation.bundles["site-a"]).manifest.bundle.inputs
    assert summary is not None and summary.samples == 270  # the training split
    # an npz of 1 x 8 x 8 images is summarised as images are: per channel, with histograms
    assert len(summary.channel_mean) == 1 and summary.bad_share == 0.0
    assert sum(summary.brightness) == 270 and summary.sizes == (270, 0, 0, 0, 0, 0)
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
    _train_site_b_again(cli, federation, inverted)
    drift = _rows(cli, federation)
    assert drift["site-b"]["flagged"] and drift["site-b"]["distance"] > 1.0
    assert "the other site's" in drift["site-b"]["hint"]
    text = cli("aggregate", federation.hub, "--dry-run")
    assert "input drift: site-b's images are" in text.err


@pytest.mark.slow
def test_a_folder_of_images_beside_an_npz_of_them_is_compared_as_images(
    federation: Federation, cli, tmp_path: Path
) -> None:
    """The same digits in an npz and as PNG files: both summarised per channel, alike, and
    the round aggregates (a summary per value beside one per channel failed after the
    commit)."""
    with np.load(federation.data["site-b"]) as npz:
        x, y = npz["x"], npz["y"]
    folder = tmp_path / "b-images"
    for k, (pixels, label) in enumerate(zip(x, y, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        image = np.clip(np.asarray(pixels).reshape(8, 8) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / str(label) / f"{k:03d}.png")
    _train_site_b_again(cli, federation, folder)
    drift = _rows(cli, federation)
    assert all(d["distance"] is not None and not d["flagged"] for d in drift.values()), drift
    done = cli("aggregate", federation.hub, "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["report"]["package"].endswith("fed-r0001.safetensors")
