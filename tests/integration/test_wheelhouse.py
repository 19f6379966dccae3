"""Offline install kits: sign and verify through the CLI; build, then install with no index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hub_kit import wheelhouse as wh
from tests.conftest import make_key


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """A minimal, installable-looking wheel (metadata only) for resolution tests."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-cp311-cp311-manylinux_2_28_x86_64.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", meta)
        zf.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
            "Tag: cp311-cp311-manylinux_2_28_x86_64\n",
        )
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def _house(tmp_path: Path) -> Path:
    out = tmp_path / "wheels"
    out.mkdir()
    _fake_wheel(out, "flsilo", "0.1.0")
    (out / "requirements.txt").write_text("flsilo==0.1.0\n")
    wh.write_sums(out)
    return out


def test_sign_then_verify_then_tamper(cli, tmp_path: Path) -> None:
    out = _house(tmp_path)
    hub = make_key(tmp_path / "keys" / "hub")
    other = make_key(tmp_path / "keys" / "other")
    signed = cli("wheelhouse", "sign", out, "--key", hub)
    assert signed.code == 0, signed.err
    ok = cli("wheelhouse", "verify", out, "--key", f"{hub}.pub", "--json")
    assert ok.code == 0, ok.err
    doc = json.loads(ok.out)
    assert doc["install"].startswith("pip install --no-index --find-links ")
    assert "--require-hashes" in doc["install"]
    assert sorted(doc["files"]) == sorted(
        p.name for p in out.iterdir() if "SHA256SUMS" not in p.name
    )

    wrong = cli("wheelhouse", "verify", out, "--key", f"{other}.pub")
    assert wrong.code == 3 and "error[unknown-signer]" in wrong.err

    (out / "evil-1.0-py3-none-any.whl").write_bytes(b"not listed")
    stranger = cli("wheelhouse", "verify", out, "--key", f"{hub}.pub")
    assert stranger.code == 3 and "evil-1.0" in stranger.err
    (out / "evil-1.0-py3-none-any.whl").unlink()

    (out / "requirements.txt").write_text("flsilo==0.1.0\nevil==1.0\n")
    changed = cli("wheelhouse", "verify", out, "--key", f"{hub}.pub")
    assert changed.code == 3 and "error[wheelhouse-tampered]" in changed.err
    refused = cli("wheelhouse", "sign", out, "--key", hub)  # never signs a changed folder
    assert refused.code == 3


def test_stock_tools_check_the_signed_wheelhouse(cli, tmp_path: Path) -> None:
    from tests.conftest import SSH_KEYGEN

    if SSH_KEYGEN is None:
        pytest.skip("ssh-keygen (OpenSSH) is not installed")
    out = _house(tmp_path)
    hub = make_key(tmp_path / "hub")
    assert cli("wheelhouse", "sign", out, "--key", hub).code == 0
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'hub namespaces="flsilo-wheelhouse" {(tmp_path / "hub.pub").read_text()}')
    with (out / "SHA256SUMS").open("rb") as fh:
        done = subprocess.run(
            [SSH_KEYGEN, "-Y", "verify", "-f", signers, "-I", "hub", "-n", "flsilo-wheelhouse"]
            + ["-s", out / "SHA256SUMS.sig"],
            stdin=fh,
            capture_output=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, check=False
    )
    assert sums.returncode == 0, sums.stdout


def test_build_refuses_a_used_folder(cli, tmp_path: Path) -> None:
    out = _house(tmp_path)
    result = cli("wheelhouse", "build", out)
    assert result.code == 2 and "error[exists]" in result.err
    assert cli("wheelhouse", "build", tmp_path / "new", "--target", "rocm").code == 2


@pytest.mark.slow
def test_cuda_target_resolves_cuda_torch_and_cpu_target_refuses_it(cli, tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    _fake_wheel(links, "torch", "2.13.0+cu126", ["nvidia-cublas-cu12==99.0"])
    _fake_wheel(links, "nvidia-cublas-cu12", "99.0")
    cuda = cli(
        "wheelhouse", "build", tmp_path / "w", "--target", "cuda", "--find-links", links,
        "--resolve-only", "--json",
    )  # fmt: skip
    assert cuda.code == 0, cuda.err
    names = {i["name"]: i["version"] for i in json.loads(cuda.out)["resolved"]}
    assert names["torch"] == "2.13.0+cu126" and "nvidia-cublas-cu12" in names
    assert names["flsilo"] == "0.1.0"
    cpu = cli(
        "wheelhouse", "build", tmp_path / "w", "--target", "cpu", "--find-links", links,
        "--resolve-only",
    )  # fmt: skip
    assert cpu.code == 2 and "error[wheelhouse-cuda-torch]" in cpu.err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_cpu_wheelhouse_installs_offline_with_no_index(cli, tmp_path: Path) -> None:
    """The whole trip: build on a 'connected' machine, sign, verify, install with no index."""
    out = tmp_path / "wheels"
    built = cli("wheelhouse", "build", out, "--target", "cpu", "--find-links", "/opt/wheels")
    if built.code != 0 and "error[pip-failed]" in built.err:
        pytest.skip(f"no package index reachable to build a wheelhouse: {built.err.strip()}")
    assert built.code == 0, built.err
    assert not list(out.glob("nvidia*")), "a CPU wheelhouse holds no CUDA wheels"
    hub = make_key(tmp_path / "hub")
    assert cli("wheelhouse", "sign", out, "--key", hub).code == 0
    verified = cli("wheelhouse", "verify", out, "--key", f"{hub}.pub", "--json")
    assert verified.code == 0, verified.err

    site = tmp_path / "site-venv"
    subprocess.run([sys.executable, "-m", "venv", site], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index, links or constraints
    install = [str(site / "bin" / "python"), "-m", "pip", *wh.install_command(out)[1:]]
    done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    version = subprocess.run(
        [str(site / "bin" / "flsilo"), "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("flsilo ")
    torch = subprocess.run(
        [str(site / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert torch.stdout.strip().endswith("+cpu"), torch.stderr


def test_site_kit_carries_only_a_wheelhouse_signed_by_its_hub(
    federation, cli, tmp_path: Path
) -> None:
    out = _house(tmp_path)
    kit = tmp_path / "kit"
    unsigned = cli("hub", "kit", federation.hub, "site-a", "--out", kit, "--wheelhouse", out)
    assert unsigned.code == 3 and "error[missing-signature]" in unsigned.err
    assert not kit.exists()
    assert cli("wheelhouse", "sign", out, "--key", federation.keys / "hub").code == 0
    made = cli("hub", "kit", federation.hub, "site-a", "--out", kit, "--wheelhouse", out)
    assert made.code == 0, made.err
    check = cli("wheelhouse", "verify", kit / "wheelhouse", "--key", kit / "hub.pub")
    assert check.code == 0, check.err
