"""The command line's promises: no torch on the verify path, help with examples, documented exits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flsilo.cli.app import app, hoist_global_options
from flsilo.runtime.errors import ExitCode
from tests.conftest import make_key

ROOT = Path(__file__).resolve().parents[2]


def _commands(group=None, prefix=()):
    import typer.main

    click_group = typer.main.get_command(app) if group is None else group
    for name, cmd in click_group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("command", list(_commands()), ids=lambda c: " ".join(c))
def test_every_command_has_help_with_an_example(cli, command) -> None:
    result = cli(*command, "--help")
    assert result.code == 0
    assert "Example:" in result.out


def test_every_exit_code_is_documented() -> None:
    doc = (ROOT / "docs" / "reference" / "exit-codes.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", doc, re.M), (
            f"exit code {int(code)} is not documented"
        )


def test_usage_errors_exit_2(cli) -> None:
    assert cli("verify", "nothing.safetensors").code == 2  # no trust given
    assert cli("hub", "init").code == 2
    assert cli("no-such-command").code == 2


def test_verbose_shows_the_traceback(cli, tmp_path: Path) -> None:
    quiet = cli("keys", "fingerprint", tmp_path / "missing.pub")
    assert (
        quiet.code == 1
        and "Traceback" not in quiet.err
        and len(quiet.err.strip().splitlines()) == 1
    )
    loud = cli("--verbose", "keys", "fingerprint", tmp_path / "missing.pub")
    assert "Traceback" in loud.err


def test_flsilo_own_options_may_follow_the_command(cli, tmp_path: Path) -> None:
    """``flsilo demo --threads 1`` as ``flsilo --threads 1 demo``: it was 'No such option'."""
    pub = make_key(tmp_path / "k").with_name("k.pub")
    for threads in (["--threads", "1"], ["--threads=1"]):
        result = cli("keys", "fingerprint", pub, *threads)
        assert result.code == 0 and result.out.startswith("SHA256:"), result.err
    loud = cli("keys", "fingerprint", tmp_path / "missing.pub", "-v")
    assert loud.code == 1 and "Traceback" in loud.err
    assert hoist_global_options(["demo", "--seed", "3", "--threads", "1", "--", "-v"]) == [
        "--threads", "1", "demo", "--seed", "3", "--", "-v",
    ]  # fmt: skip


def test_a_command_options_value_is_not_taken_for_flsilos_own(cli, tmp_path: Path) -> None:
    """``keys new K --comment -v``: the comment is '-v' (it was hoisted as --verbose, and
    --comment refused for want of a value); the last --threads given wins."""
    key = tmp_path / "k"
    made = cli("keys", "new", key, "--comment", "-v", "--no-passphrase")
    assert made.code == 0, made.err
    assert key.with_name("k.pub").read_text().rstrip().endswith(" -v")
    assert hoist_global_options(["--threads", "2", "hub", "status", "H", "--threads", "4"]) == [
        "--threads", "2", "--threads", "4", "hub", "status", "H",
    ]  # fmt: skip
    assert hoist_global_options(["train", "--data", "-v", "--threads=1", "W"]) == [
        "--threads=1", "train", "--data", "-v", "W",
    ]  # fmt: skip
    assert hoist_global_options(["nosuch", "-v"]) == ["nosuch", "-v"]


def test_json_errors_are_machine_readable(cli, tmp_path: Path) -> None:
    result = cli("keys", "fingerprint", tmp_path / "missing.pub", "--json")
    doc = json.loads(result.out)
    assert (
        doc["ok"] is False
        and doc["error"]["code"] == "key-missing"
        and doc["error"]["exit_code"] == 1
    )


def test_keys_new_then_fingerprint(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLSILO_PASSPHRASE", "correct horse")
    made = cli("keys", "new", tmp_path / "k", "--json")
    fp = json.loads(made.out)["fingerprint"]
    assert json.loads(made.out)["encrypted"] is True
    assert cli("keys", "fingerprint", tmp_path / "k.pub").out.strip() == fp
    told = cli("keys", "new", tmp_path / "hub")  # the hub's own key is read to every site
    assert "the hub's key: every site" in " ".join(told.err.split())
    monkeypatch.delenv("FLSILO_PASSPHRASE")
    refused = cli("keys", "new", tmp_path / "k2")
    assert refused.code == 2 and "passphrase" in refused.err


def test_commands_that_need_no_model_do_not_import_torch(federation) -> None:
    """The verify path (verify, inspect, keys fingerprint) and the hub's commands that run
    numpy only (aggregate, its --dry-run, audit --replay, hub status, hub history, hub
    evaluations; hub init
    may import torch), one after another in one fresh process, each as ``python -m flsilo``
    runs it: each must leave torch out of sys.modules (a process of their own each cost a
    Python start and flsilo's imports). Their output goes to real pipes, with progress shown
    at once (FLSILO_PROGRESS_AFTER=0): plain lines on stderr, never on stdout."""
    federation.carry()
    hub, bundle = federation.hub, federation.bundles["site-a"]
    commands = [
        ["verify", bundle, "--signers", hub / "allowed_signers"],
        ["inspect", bundle],
        ["keys", "fingerprint", federation.keys / "hub.pub"],
        ["aggregate", hub, "--dry-run", "--inbox", hub / "inbox"],
        ["hub", "status", hub],
        ["aggregate", hub],
        ["audit", hub, "--hub-key", federation.keys / "hub.pub", "--replay"],
        ["hub", "history", hub],
        ["hub", "evaluations", hub],
    ]
    code = (
        "import runpy, sys\n"
        f"for args in {[[str(a) for a in c] for c in commands]!r}:\n"
        "    sys.argv = ['flsilo', *args]\n"
        "    try:\n"
        "        runpy.run_module('flsilo', run_name='__main__')\n"
        "    except SystemExit as done:\n"
        "        rc = done.code\n"
        "    for stream in (sys.stdout, sys.stderr):\n"
        "        print(f'{END} {rc} {\"torch\" in sys.modules}', file=stream, flush=True)\n"
    )
    env = {**os.environ, "FLSILO_PROGRESS_AFTER": "0"}
    result = subprocess.run(
        [sys.executable, "-c", f"END = {END!r}\n{code}"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out, err = _per_command(result.stdout), _per_command(result.stderr)
    assert [ended for _, ended in out] == [["0", "False"]] * len(commands), result.stderr
    assert [ended for _, ended in err] == [["0", "False"]] * len(commands), result.stderr
    assert not any(PROGRESS.search(text) for text, _ in out)
    verified_out, verified_err = out[0][0], err[0][0]
    assert re.search(r"^verify: verifying done: 1 file, [\d.]+ KiB in ", verified_err, re.M)
    assert "OK" in verified_out


END = "--- command ended:"
PROGRESS = re.compile(r"^(aggregate|audit|verify): ", re.MULTILINE)


def _per_command(stream: str) -> list[tuple[str, list[str]]]:
    """Each command's text in a stream and its (exit code, torch imported) as printed after it."""
    parts, text = [], []
    for line in stream.splitlines():
        if line.startswith(END):
            parts.append(("\n".join(text), line.removeprefix(END).split()))
            text = []
        else:
            text.append(line)
    return parts
