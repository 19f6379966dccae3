"""Stock tools verify what flsilo writes: ssh-keygen (P-256 too), sha256sum, model_signing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flsilo.signing.keys import load_public_key
from tests.conftest import (
    Federation,
    build_federation,
    hub_root,
    needs_ssh_keygen,
    ssh_keygen,
    stock_verify,
)

SHA256SUM = shutil.which("sha256sum")
needs_sha256sum = pytest.mark.skipif(SHA256SUM is None, reason="coreutils sha256sum missing")


def model_signing_cli() -> str | None:
    """The real ``model_signing`` CLI (dev extra), beside this interpreter or on PATH."""
    beside = Path(sys.executable).with_name("model_signing")
    return str(beside) if beside.exists() else shutil.which("model_signing")


needs_model_signing = pytest.mark.skipif(
    model_signing_cli() is None,
    reason="model_signing (model-signing 1.1.1, dev extra) is not installed",
)


def sha256sum_check(folder: Path) -> subprocess.CompletedProcess[bytes]:
    assert SHA256SUM is not None
    return subprocess.run(
        [SHA256SUM, "-c", "SHA256SUMS"], cwd=folder, capture_output=True, check=False
    )


@needs_sha256sum
def test_round_archive_sha256sums_pass_sha256sum_and_audit_catches_a_change(
    federation: Federation, cli
) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    archive = federation.hub / "rounds" / "0000"
    listed = (archive / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in listed) == sorted(
        p.name for p in archive.iterdir() if p.name != "SHA256SUMS"
    )
    assert len(listed) == 4  # two bundles, two signatures
    assert sha256sum_check(archive).returncode == 0
    assert cli("audit", federation.hub, *hub_root(federation.hub)).code == 0
    sig = next(archive.glob("*.sig"))
    sig.write_bytes(sig.read_bytes().replace(b"-----END", b"-----end"))
    assert sha256sum_check(archive).returncode != 0
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert audit.code == 3
    assert "SHA256SUMS r0000" in audit.out


@pytest.fixture(scope="module")
def p256_federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """Hub and site-a hold ECDSA P-256 keys; site-b keeps Ed25519: one round aggregated."""
    fed = build_federation(
        tmp_path_factory.mktemp("p256") / "fed",
        key_types={"hub": "ecdsa-p256", "site-a": "ecdsa-p256"},
    )
    fed.carry()
    from flsilo.cli.app import run

    assert run(["aggregate", str(fed.hub)]) == 0
    return fed


@pytest.mark.slow
@needs_ssh_keygen
def test_p256_hub_and_site_keys_run_a_round_that_stock_ssh_keygen_verifies(
    p256_federation: Federation, cli
) -> None:
    fed = p256_federation
    assert load_public_key(fed.hub / "hub.pub").key_type == "ecdsa-sha2-nistp256"
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0
    package = fed.hub / "packages" / "fed-r0001.safetensors"
    verified = cli("verify", package, "--key", fed.hub / "hub.pub", "--json")
    assert verified.code == 0
    assert '"model_signing_bundle": true' in verified.out
    bundle_json = Path(f"{package}.sigstore.json")
    other = fed.hub / "packages" / "fed-r0000.safetensors.sigstore.json"
    saved = bundle_json.read_bytes()
    bundle_json.write_bytes(other.read_bytes())  # mix-and-match: round 0's bundle beside round 1
    mixed = cli("verify", package, "--key", fed.hub / "hub.pub", "--json")
    bundle_json.write_bytes(saved)
    assert mixed.code == 3
    assert "oms-mismatch" in mixed.out
    ok = stock_verify(
        str(fed.hub / "allowed_signers"),
        "hub",
        "flsilo-package",
        f"{package}.sig",
        package.read_bytes(),
    )
    assert ok.returncode == 0, ok.stderr
    bundle = next((fed.hub / "rounds" / "0000").glob("*site-a.safetensors"))
    ok = stock_verify(
        str(fed.hub / "allowed_signers"),
        "site-a",
        "flsilo-bundle",
        f"{bundle}.sig",
        bundle.read_bytes(),
    )
    assert ok.returncode == 0, ok.stderr


@pytest.mark.slow
@needs_ssh_keygen
@needs_model_signing
def test_model_signing_verify_key_accepts_the_hubs_bundle_offline(
    p256_federation: Federation, tmp_path: Path
) -> None:
    fed = p256_federation
    pem = ssh_keygen("-e", "-m", "PKCS8", "-f", str(fed.hub / "hub.pub"))
    assert pem.returncode == 0
    (tmp_path / "hub.pem").write_bytes(pem.stdout)
    tool = model_signing_cli()
    assert tool is not None
    for name in ("fed-r0000.safetensors", "fed-r0001.safetensors"):
        package = tmp_path / name
        shutil.copy(fed.hub / "packages" / name, package)
        bundle = fed.hub / "packages" / f"{name}.sigstore.json"
        args = [tool, "verify", "key", str(package), "--signature", str(bundle)]
        args += ["--public_key", str(tmp_path / "hub.pem")]
        ok = subprocess.run(args, capture_output=True, check=False)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        package.write_bytes(package.read_bytes()[:-4] + b"\0\0\0\1")
        bad = subprocess.run(args, capture_output=True, check=False)
        assert bad.returncode != 0


@pytest.mark.slow
@needs_ssh_keygen
@needs_model_signing
def test_auditor_recipe_runs_model_signing_with_a_p256_hub(p256_federation: Federation) -> None:
    from tests.integration.test_auditor_recipe import run_recipe

    tool = model_signing_cli()
    assert tool is not None
    ok = run_recipe(p256_federation, path=f"{Path(tool).parent}:")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "model_signing accepts" in ok.stdout and ok.stdout.rstrip().endswith("PASS")
    packages = p256_federation.hub / "packages"
    bundle = packages / "fed-r0001.safetensors.sigstore.json"
    saved = bundle.read_bytes()
    shutil.copy(packages / "fed-r0000.safetensors.sigstore.json", bundle)
    try:
        bad = run_recipe(p256_federation, path=f"{Path(tool).parent}:")
    finally:
        bundle.write_bytes(saved)
    assert bad.returncode != 0 and bad.stdout.rstrip().endswith("FAIL")
