"""The operator's basics through the CLI: version, help, argument errors, passphrase order,
thread budget, interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flsilo import __version__
from flsilo.runtime.cpu import _cgroup_quota, configure_threads, cpu_budget
from flsilo.signing.keys import load_private_key
from tests.conftest import Federation, another_hubs_package, make_key


def test_version_and_short_help(cli) -> None:
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"flsilo {__version__}"
    helped = cli("verify", "-h")
    assert helped.code == 0 and "Example:" in helped.out


def test_argument_errors_are_one_line_with_a_hint(cli) -> None:
    result = cli("verify", "--no-such-option", "x")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("flsilo: error[usage]: flsilo verify: ")
    assert "--no-such-option" in lines[0] and "hint: see 'flsilo verify --help'" in lines[0]
    bad_value = cli("--threads", "0", "keys", "fingerprint", "x.pub")
    assert bad_value.code == 2 and bad_value.err.count("\n") == 1


def test_argument_errors_give_a_json_document_too(cli) -> None:
    result = cli("hub", "status", "--json", "--bogus")
    assert result.code == 2
    assert result.err.startswith("flsilo: error[usage]")
    doc = json.loads(result.out)
    assert doc["ok"] is False and doc["error"]["code"] == "usage"


def test_json_reports_carry_the_version(cli, tmp_path: Path) -> None:
    result = cli("verify", tmp_path / "missing.safetensors", "--key", tmp_path / "k.pub", "--json")
    doc = json.loads(result.out)
    assert doc["schema"] == "flsilo.report/1" and doc["flsilo_version"] == __version__
    assert doc["ok"] is False


def test_passphrase_file_beats_the_environment(cli, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "pass").write_text("from-the-file\n")
    monkeypatch.setenv("FLSILO_PASSPHRASE", "from-the-environment")
    assert cli("keys", "new", tmp_path / "k", "--passphrase-file", tmp_path / "pass").code == 0
    # raises "wrong passphrase" had the environment won
    assert load_private_key(tmp_path / "k", lambda _p: b"from-the-file") is not None


def test_thread_budget_respects_a_cgroup_quota(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    assert 1 <= cpu_budget() <= (os.cpu_count() or 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert configure_threads(3) == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert configure_threads(None) == 2  # an explicit environment setting is kept


def test_threads_option_reaches_torch(cli, tmp_path: Path, monkeypatch) -> None:
    import torch

    make_key(tmp_path / "k")
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, str(before))  # restored after the test
    try:
        assert cli("--threads", "1", "keys", "fingerprint", tmp_path / "k.pub").code == 0
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def _wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, limit: float = 120) -> None:
    root, pattern = path_glob
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not list(root.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert list(root.glob(pattern)), "the command never reached its first checkpoint"


@pytest.mark.slow
def test_sigterm_during_training_is_one_line_and_exit_143(tmp_path: Path, cli) -> None:
    import numpy as np

    from tests.conftest import digits_npz
    from tests.integration.test_site import _site, new_hub

    _hub, keys = new_hub(tmp_path, cli, epochs=40, model="mlp:hidden=256x256")
    site = _site(tmp_path, cli, keys, digits_npz(tmp_path / "d.npz", np.arange(1500)))
    cmd = [sys.executable, "-m", "flsilo", "train"]
    cmd += [str(site / "packages" / "fed-r0000.safetensors"), "--site", str(site), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for((site / "work", "*/checkpoint.safetensors"), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1].startswith("flsilo: error[interrupted]: flsilo train")
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["error"]["code"] == "interrupted"
    assert doc["error"]["exit_code"] == 143
    assert not list((site / "outbox").glob("*.safetensors"))


@pytest.mark.parametrize("json_out", [False, True])
def test_a_plain_keyboard_interrupt_inside_a_command_says_what_stopped(
    cli, tmp_path: Path, monkeypatch, json_out: bool
) -> None:
    """A KeyboardInterrupt raised inside a command (not through flsilo's signal handler)
    gets the same one line as Ctrl-C, and --json an error document; exit 130."""
    import hub_kit.status

    def ctrl_c(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(hub_kit.status, "status", ctrl_c)
    result = cli("hub", "status", tmp_path, *(["--json"] if json_out else []))
    assert result.code == 130
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("flsilo: error[interrupted]: flsilo hub status interrupted (Ctrl-C)")
    assert "nothing half-written was kept" in lines[0] and "rerun the same command" in lines[0]
    if json_out:
        doc = json.loads(result.out)
        assert doc["ok"] is False and doc["error"]["code"] == "interrupted"
        assert doc["error"]["exit_code"] == 130
    else:
        assert result.out == ""


def test_a_folder_or_a_mistyped_path_is_not_called_a_missing_signature(
    federation: object, cli
) -> None:
    packages = federation.sites["site-a"] / "packages"
    hub_pub = federation.keys / "hub.pub"
    folder = cli("verify", packages, "--key", hub_pub)
    assert folder.code == 2 and "error[not-a-file]" in folder.err and ".sig" not in folder.err
    typo = cli("verify", packages / "fed-r000.safetensors", "--key", hub_pub)
    assert typo.code == 2 and "error[no-such-file]" in typo.err
    assert "fed-r0000.safetensors" in typo.err  # the hint names what is there
    site = federation.sites["site-a"]
    train = cli("train", packages, "--site", site)
    assert train.code == 2 and "error[not-a-file]" in train.err


def _read_until(fd: int, needle: bytes, seen: bytearray, limit: float = 180) -> bool:
    import select

    deadline = time.monotonic() + limit
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                return needle in seen
            if not chunk:
                return needle in seen
            seen += chunk
    return needle in seen


@pytest.mark.slow
def test_prompt_at_a_terminal_is_never_hidden_and_ctrl_c_is_one_line(tmp_path: Path, cli) -> None:
    """At a real terminal (a pty): the passphrase prompt shows before any progress, then
    Ctrl-C during training prints one line and exits 130."""
    import pty

    import numpy as np

    from flsilo.signing.keys import load_private_key, private_key_bytes
    from tests.conftest import digits_npz
    from tests.integration.test_site import _site, new_hub

    _hub, keys = new_hub(tmp_path, cli, epochs=40, model="mlp:hidden=256x256")
    site = _site(tmp_path, cli, keys, digits_npz(tmp_path / "d.npz", np.arange(1500)))
    key = load_private_key(keys / "site-a", lambda _p: b"")
    (keys / "site-a").write_bytes(private_key_bytes(key, b"typed at the terminal"))
    env = {k: v for k, v in os.environ.items() if k != "FLSILO_PASSPHRASE"}
    env["COLUMNS"] = "100"
    argv = [sys.executable, "-m", "flsilo", "train"]
    argv += [str(site / "packages" / "fed-r0000.safetensors"), "--site", str(site)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: flsilo with the pty as its terminal
        os.execve(sys.executable, argv, env)
    seen = bytearray()
    try:
        assert _read_until(fd, b"Passphrase for ", seen), bytes(seen)
        before_prompt = bytes(seen).split(b"Passphrase for ")[0]
        assert b"epoch" not in before_prompt and b"\x1b[?25l" not in before_prompt  # no bar
        os.write(fd, b"typed at the terminal\n")
        assert _read_until(fd, b"epoch 1/40", seen), bytes(seen)
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline
        _read_until(fd, b"rerun the same command", seen, limit=60)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = bytes(seen).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 130, text
    assert "error[interrupted]: flsilo train interrupted (Ctrl-C)" in text
    assert "Traceback" not in text
    assert not list((site / "outbox").glob("*.safetensors"))


def test_at_takes_the_time_the_event_log_shows(federation: Federation, cli) -> None:
    from flsilo.format.artifact import scan_file

    bundle = federation.bundles["site-a"]
    signers = federation.hub / "allowed_signers"
    shown = scan_file(bundle).manifest.created_at  # as the log and inspect show it
    assert "T" in shown and shown.endswith("Z")
    for form in (shown, shown[:10], shown.replace("-", "").replace(":", "").replace("T", "")):
        result = cli("verify", bundle, "--signers", signers, "--at", form)
        assert result.code in (0, 3), result.err  # parsed (3: not yet valid at midnight)
        assert "error[usage]" not in result.err
    bad = cli("verify", bundle, "--signers", signers, "--at", "last tuesday")
    assert bad.code == 2 and "2026-11-22T14:03:00Z" in bad.err


def test_a_package_from_another_hub_gets_a_site_side_hint(
    federation: Federation, tmp_path: Path, cli
) -> None:
    package = another_hubs_package(cli, tmp_path)
    result = cli("train", package, "--site", federation.sites["site-a"])
    assert result.code == 3 and "error[unknown-signer]" in result.err
    assert "not signed by your hub" in result.err and "confirmed at site init" in result.err


def test_library_warnings_do_not_leak_unless_verbose(cli, tmp_path: Path, monkeypatch) -> None:
    import warnings

    import flsilo.cli.keys_cmd as keys_cmd

    make_key(tmp_path / "k")
    real = keys_cmd.load_public_key

    def chatty(path):  # a library warning raised from inside a command
        warnings.warn_explicit("internal detail", UserWarning, "torch/nn.py", 1, module="torch.nn")
        return real(path)

    monkeypatch.setattr(keys_cmd, "load_public_key", chatty)
    for flags, shown in (((), False), (("--verbose",), True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cli(*flags, "keys", "fingerprint", tmp_path / "k.pub").code == 0
        assert any("internal detail" in str(w.message) for w in caught) == shown
