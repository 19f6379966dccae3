"""A file given where a folder is expected (a workspace, a kit, an inbox, an output folder) is
said as such, in one line with its own code, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from flsilo.runtime.codes import Code
from tests.conftest import Federation, tree_digest


def _refused(result, path: Path, expected: str) -> str:
    assert result.code == 2, result.err
    line = result.err.strip()
    assert "\n" not in line and "Traceback" not in line, result.err
    assert line.startswith(f"flsilo: error[{Code.NOT_A_FOLDER}]: {path}: "), line
    assert f"this is a file, not a folder (expected: {expected})" in line, line
    return line


@pytest.mark.parametrize(
    "command",
    [
        ("site", "status", "{f}"),
        ("site", "check-data", "{f}"),
        ("train", "{pkg}", "--site", "{f}"),
        ("evaluate", "{pkg}", "--site", "{f}", "--data", "{data}"),
    ],
)
def test_a_file_as_the_site_workspace(
    cli, federation_template: Federation, tmp_path: Path, command: tuple[str, ...]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    site = federation_template.sites["site-a"]
    fill = {
        "f": afile,
        "pkg": site / "packages" / "fed-r0000.safetensors",
        "data": federation_template.data["site-a"],
    }
    line = _refused(cli(*(a.format(**fill) for a in command)), afile, "the site workspace")
    assert "the one holding site.toml" in line and "unreadable" not in line
    assert afile.read_text() == "x\n"


def test_the_workspace_file_itself_points_at_its_folder(
    cli, federation_template: Federation
) -> None:
    site = federation_template.sites["site-a"]
    line = _refused(
        cli("site", "status", site / "site.toml"), site / "site.toml", "the site workspace"
    )
    assert line.endswith(f"(hint: did you mean its folder {site}?)")
    hub = federation_template.hub
    toml = hub / "federation.toml"
    line = _refused(cli("hub", "status", toml), toml, "the hub workspace")
    assert line.endswith(f"(hint: did you mean its folder {hub}?)")


def test_a_file_as_the_kit_the_inbox_or_a_new_folder(
    cli, federation_template: Federation, tmp_path: Path
) -> None:
    fed = federation_template
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    before = tree_digest(fed.root)
    keys = fed.keys
    init = cli(
        "site", "init", tmp_path / "new-site", "--kit", afile, "--site-id", "site-a",
        "--key", keys / "site-a", "--hub-fingerprint", "SHA256:" + "A" * 43,
    )  # fmt: skip
    assert "the one holding kit.toml" in _refused(init, afile, "the site kit")
    assert not (tmp_path / "new-site").exists()
    site_dir = cli(
        "site", "init", afile, "--kit", fed.root / "kit-site-a", "--site-id", "site-a",
        "--key", keys / "site-a", "--hub-fingerprint", "SHA256:" + "A" * 43,
    )  # fmt: skip
    assert "'site init' creates it" in _refused(site_dir, afile, "the site workspace")
    inbox = cli("hub", "status", fed.hub, "--inbox", afile)
    assert ".sig files" in _refused(inbox, afile, "the inbox")
    kit = cli("hub", "kit", fed.hub, "site-a", "--out", afile)
    assert "'hub kit' creates it" in _refused(kit, afile, "the kit")
    hub = cli(
        "hub", "init", afile, "--federation", "f", "--model", "logreg", "--classes", "a,b",
        "--input-shape", "3", "--key", keys / "hub",
    )  # fmt: skip
    assert "'hub init' creates it" in _refused(hub, afile, "the hub workspace")
    assert afile.read_text() == "x\n" and tree_digest(fed.root) == before


@pytest.mark.parametrize(
    ("command", "expected", "hint"),
    [
        (("demo", "--out", "{f}"), "the demo folder", "the demo creates it"),
        (("simulate", "--sites", "2", "--out", "{f}"), "the --out folder", "simulate creates it"),
        (("wheelhouse", "sign", "{f}", "--key", "{key}"), "the wheelhouse", "holding SHA256SUMS"),
        (
            ("hub", "kit", "{hub}", "site-a", "--out", "{new}", "--wheelhouse", "{f}"),
            "the wheelhouse",
            "holding SHA256SUMS",
        ),
    ],
)
def test_a_file_as_an_output_or_wheelhouse_folder(
    cli,
    federation_template: Federation,
    tmp_path: Path,
    command: tuple[str, ...],
    expected: str,
    hint: str,
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    fill = {
        "f": afile,
        "key": federation_template.keys / "hub",
        "hub": federation_template.hub,
        "new": tmp_path / "kit",
    }
    line = _refused(cli(*(a.format(**fill) for a in command)), afile, expected)
    assert hint in line
    assert afile.read_text() == "x\n" and sorted(tmp_path.iterdir()) == [afile]
