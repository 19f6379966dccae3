"""``hub init --config PLAN.toml`` and ``--print-config``: the plan as a reviewed file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.conftest import make_key, tree_digest

OPTIONS = (
    "--federation", "fed", "--model", "logreg", "--classes", "a,b,c",
    "--input-shape", "4", "--schedule", "periodic:3", "--local-epochs", "2",
    "--lr", "0.02", "--min-sites", "2", "--strategy", "median", "--batch-size", "16",
)  # fmt: skip


def _key(tmp_path: Path) -> Path:
    return make_key(tmp_path / "keys" / "hub")


def test_print_config_writes_a_file_that_init_accepts(cli, tmp_path: Path) -> None:
    printed = cli("hub", "init", "--print-config")
    assert printed.code == 0, printed.err
    data = tomllib.loads(printed.out)
    assert {"schedule", "plan", "hub", "data"} <= set(data)
    assert "# Learning rate." in printed.out  # each setting says what it does
    plan = tmp_path / "plan.toml"
    plan.write_text(printed.out)
    key = _key(tmp_path)
    # unedited, the template's example id is refused: a federation's id is signed for good
    unedited = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", key)
    assert unedited.code == 2 and "error[bad-config]" in unedited.err, unedited.err
    assert "has not been edited" in unedited.err and str(plan) in unedited.err
    assert len(unedited.err.strip().splitlines()) == 1 and not (tmp_path / "hub").exists()
    plan.write_text(printed.out.replace('federation = "my-federation"', 'federation = "xray"'))
    made = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", key)
    assert made.code == 0, made.err
    written = tomllib.loads((tmp_path / "hub" / "federation.toml").read_text())
    assert written["federation"] == "xray" and written["schedule"]["rounds"] == 5
    named = cli("hub", "init", tmp_path / "hub2", "--config", tmp_path / "hub" / "federation.toml",
                "--federation", "my-federation", "--key", key)  # fmt: skip
    assert named.code == 0, named.err  # given on the command line: chosen, not left over


def test_a_file_and_the_same_options_make_the_same_federation(cli, tmp_path: Path) -> None:
    key = _key(tmp_path)
    assert cli("hub", "init", tmp_path / "by-options", "--key", key, *OPTIONS).code == 0
    plan = tmp_path / "plan.toml"
    plan.write_text((tmp_path / "by-options" / "federation.toml").read_text())
    result = cli("hub", "init", tmp_path / "by-file", "--config", plan, "--key", key)
    assert result.code == 0, result.err
    assert (tmp_path / "by-file" / "federation.toml").read_bytes() == (
        tmp_path / "by-options" / "federation.toml"
    ).read_bytes()


def test_options_on_the_command_line_override_the_file(cli, tmp_path: Path) -> None:
    key = _key(tmp_path)
    assert cli("hub", "init", tmp_path / "first", "--key", key, *OPTIONS).code == 0
    plan = tmp_path / "plan.toml"
    plan.write_text((tmp_path / "first" / "federation.toml").read_text())
    result = cli(
        "hub", "init", tmp_path / "hub", "--config", plan, "--key", key,
        "--lr", "0.5", "--local-epochs", "4", "--federation", "other", "--norm-gate", "3",
    )  # fmt: skip
    assert result.code == 0, result.err
    written = tomllib.loads((tmp_path / "hub" / "federation.toml").read_text())
    assert written["federation"] == "other"
    assert written["plan"]["lr"] == 0.5 and written["plan"]["batch_size"] == 16
    assert written["schedule"] == {"kind": "periodic", "rounds": 3, "local_epochs": [4, 4, 4]}
    assert written["hub"]["strategy"] == "median" and written["hub"]["norm_gate"] == 3.0


def test_a_plan_file_never_holds_the_key(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(cli("hub", "init", "--print-config").out + '\nkey = "keys/hub"\n')
    before = tree_digest(tmp_path)
    result = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", _key(tmp_path))
    assert result.code == 2
    assert "never belongs in a plan" in result.err and "plan.toml" in result.err
    assert not (tmp_path / "hub").exists()
    assert all(k in tree_digest(tmp_path) for k in before)


def test_required_settings_missing_from_file_and_options(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text("[plan]\nlr = 0.1\nbatch_size = 8\n")
    result = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", _key(tmp_path))
    assert result.code == 2 and "--federation --model --classes --input-shape" in result.err
    bare = cli("hub", "init", tmp_path / "hub", "--key", _key(tmp_path / "k2"))
    assert bare.code == 2 and "--federation" in bare.err
    assert "Traceback" not in result.err + bare.err


def test_a_misspelt_setting_names_the_file_and_the_fix(cli, tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(cli("hub", "init", "--print-config").out.replace("lr = ", "learning_rate = "))
    result = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", _key(tmp_path))
    assert result.code == 2  # bad-config: a setting the administrator wrote, as an option
    assert "learning_rate" in result.err and "--print-config" in result.err
    assert not (tmp_path / "hub").exists()
