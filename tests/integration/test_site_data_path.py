"""A site's data path: refused at site init when missing, changed by ``site set-data``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from site_kit.record import DataChanged, events
from tests.conftest import Federation, fingerprint, tree_digest


def test_set_data_checks_records_and_is_used(federation: Federation, cli, tmp_path: Path) -> None:
    site = federation.sites["site-a"]
    moved = tmp_path / "new-place.npz"
    shutil.copy(federation.data["site-a"], moved)
    result = cli("site", "set-data", site, moved, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["data_format"] is None and doc["old_data"] is not None
    last = events(site)[-1].body
    assert isinstance(last, DataChanged) and last.data == str(moved)
    status = json.loads(cli("site", "status", site, "--json").out)
    assert status["data"] == str(moved) and status["data_found"] is True
    assert cli("site", "check-data", site).code == 0  # the new path is the one used


def test_set_data_refuses_a_missing_path_and_changes_nothing(
    federation: Federation, cli, tmp_path: Path
) -> None:
    site = federation.sites["site-a"]
    before = tree_digest(site)
    result = cli("site", "set-data", site, tmp_path / "nope")
    assert result.code == 4 and "data path does not exist" in result.err
    assert "nope" in result.err
    odd = tmp_path / "labels.txt"
    odd.write_text("x")
    unknown = cli("site", "set-data", site, odd)
    assert unknown.code == 2 and "--data-format" in unknown.err
    assert tree_digest(site) == before


def test_site_status_says_when_the_data_has_gone(federation: Federation, cli) -> None:
    site = federation.sites["site-a"]
    federation.data["site-a"].unlink()
    text = cli("site", "status", site)
    assert "NOT FOUND" in text.out and "flsilo site set-data" in text.out


def test_site_init_refuses_data_that_does_not_exist(
    federation: Federation, cli, tmp_path: Path
) -> None:
    kit = tmp_path / "kit"
    hub_key = federation.keys / "hub.pub"
    assert cli("hub", "kit", federation.hub, "site-a", "--out", kit).code == 0
    result = cli(
        "site", "init", tmp_path / "site", "--kit", kit, "--site-id", "site-a",
        "--key", federation.keys / "site-a", "--hub-fingerprint", fingerprint(hub_key),
        "--data", tmp_path / "missing-folder",
    )  # fmt: skip
    assert result.code == 4 and "data path does not exist" in result.err
    assert "set-data" in result.err
    assert not (tmp_path / "site").exists()


def test_check_data_names_set_data_when_the_recorded_data_has_gone(
    federation: Federation, cli, tmp_path: Path, monkeypatch
) -> None:
    site = federation.sites["site-a"]
    data = federation.data["site-a"]
    moved = data.rename(tmp_path / "moved.npz")
    before = tree_digest(site)
    result = cli("site", "check-data", site)
    assert result.code == 4 and len(result.err.splitlines()) == 1, result.err
    assert f"error[data-missing]: {data}: the site's data path" in result.err
    assert f"flsilo site set-data {site} NEW_PATH" in result.err and "--data" in result.err
    assert tree_digest(site) == before
    spaced = shutil.copytree(site, tmp_path / "my site")  # the command in the hint pastes
    assert f"flsilo site set-data '{spaced}' NEW_PATH" in cli("site", "check-data", spaced).err
    # data recorded relative to the workspace is found from any working folder
    shutil.copy(moved, site / "data.npz")
    assert cli("site", "set-data", site, site / "data.npz").code == 0
    assert "data.npz" in (site / "site.toml").read_text()
    monkeypatch.chdir(tmp_path)
    assert cli("site", "check-data", site).code == 0
