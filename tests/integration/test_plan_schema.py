"""One plan schema: federation.toml's [schedule]/[plan]/[hub] tables, packages' plans, versions."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from flsilo.format.artifact import scan_file
from flsilo.signing.keys import generate_key, write_new_key

ARGS = ["--federation", "fed", "--model", "logreg", "--classes", "a,b,c", "--input-shape", "4"]


def _init(cli, tmp_path: Path, *extra: object) -> tuple[int, str, Path]:
    key = tmp_path / "hub.key"
    if not key.exists():
        write_new_key(key, generate_key(), None, "hub")
    hub = tmp_path / "hub"
    result = cli("hub", "init", hub, *ARGS, "--key", key, *extra, "--json")
    return result.code, result.err, hub


def test_hub_init_writes_one_table_per_part_and_packages_carry_the_plan(
    cli, tmp_path: Path
) -> None:
    code, err, hub = _init(
        cli,
        tmp_path,
        *("--schedule", "periodic:3", "--local-epochs", "3,2,1", "--lr", "0.1"),
        *("--seed", "5", "--min-sites", "2", "--strategy", "median", "--batch-size", "8"),
    )
    assert code == 0, err
    doc = tomllib.loads((hub / "federation.toml").read_text())
    assert doc["format_version"] == 3
    assert doc["schedule"] == {"kind": "periodic", "rounds": 3, "local_epochs": [3, 2, 1]}
    assert doc["plan"]["lr"] == 0.1 and doc["plan"]["batch_size"] == 8
    assert "local_epochs" not in doc["plan"]  # per round, in [schedule] only
    assert doc["hub"]["min_sites"] == 2 and doc["hub"]["strategy"] == "median"
    assert doc["data"] == {"label_column": "label", "feature_columns": []}
    (package,) = (hub / "packages").glob("*.safetensors")
    manifest = scan_file(package).manifest
    assert manifest.format_version == 3
    assert manifest.package is not None and manifest.package.plan is not None
    plan = manifest.package.plan
    assert (plan.local_epochs, plan.seed, plan.lr, plan.batch_size) == (3, 5, 0.1, 8)
    status = cli("hub", "status", hub, "--json")
    assert status.code == 0 and json.loads(status.out)["schedule"] == "periodic:3"


@pytest.mark.parametrize(
    ("option", "value", "code"),
    [
        ("--lr", "0", "bad-config"),
        ("--optimizer", "rmsprop", "bad-config"),
        ("--classes", "a", "bad-config"),
        ("--min-sites", "0", "bad-config"),
        ("--val-fraction", "1", "bad-config"),
        ("--strategy", "mode", "bad-strategy"),
        ("--schedule", "weekly", "bad-schedule"),
    ],
)
def test_bad_settings_are_usage_errors_that_create_nothing(
    cli, tmp_path: Path, option: str, value: str, code: str
) -> None:
    status, err, hub = _init(cli, tmp_path, option, value)
    assert status == 2, err
    assert f"error[{code}]" in err and "Traceback" not in err
    assert not hub.exists()


def test_an_old_format_federation_file_is_refused_naming_its_version(cli, tmp_path: Path) -> None:
    code, err, hub = _init(cli, tmp_path)
    assert code == 0, err
    toml = hub / "federation.toml"
    toml.write_text(toml.read_text().replace("format_version = 3", "format_version = 1"))
    result = cli("hub", "status", hub)
    assert result.code == 4
    assert "error[federation-version]" in result.err and "version 1" in result.err
    toml.write_text(
        "\n".join(line for line in toml.read_text().splitlines() if "format_" not in line)
    )
    assert "version 1 " in cli("hub", "status", hub).err  # a file without a version is version 1
