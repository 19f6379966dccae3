"""Release sign-off (m of n officers) and package freshness, through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flsilo.format.artifact import scan_file
from tests.conftest import (
    digits_npz,
    fingerprint,
    hub_root,
    make_key,
    needs_ssh_keygen,
    ssh_keygen,
    stock_verify,
)

DIGITS = ",".join(str(d) for d in range(10))


def one_site_hub(root: Path, cli, *init_args: object) -> tuple[Path, Path, Path]:
    """A one-shot hub with site-a enrolled and set up; returns (hub, keys, site)."""
    keys = root / "keys"
    make_key(keys / "hub")
    make_key(keys / "site-a")
    hub = root / "hub"
    init = cli(
        "hub",
        "init",
        hub,
        "--federation",
        "fed",
        "--model",
        "logreg",
        "--classes",
        DIGITS,
        "--input-shape",
        "1,8,8",
        "--key",
        keys / "hub",
        "--batch-size",
        "16",
        *init_args,
    )
    assert init.code == 0, init.err
    pub = keys / "site-a.pub"
    assert cli("hub", "enroll", hub, "site-a", pub, "--fingerprint", fingerprint(pub)).code == 0
    assert cli("hub", "kit", hub, "site-a", "--out", root / "kit").code == 0
    data = digits_npz(root / "a.npz", np.random.default_rng(0).permutation(1797)[:120])
    site = root / "site"
    made = cli(
        "site",
        "init",
        site,
        "--kit",
        root / "kit",
        "--site-id",
        "site-a",
        "--key",
        keys / "site-a",
        "--data",
        data,
        "--hub-fingerprint",
        fingerprint(hub / "hub.pub"),
    )
    assert made.code == 0, made.err
    return hub, keys, site


def train_and_carry(hub: Path, site: Path, cli, *extra: object) -> Path:
    result = cli("train", site / "packages" / "fed-r0000.safetensors", "--site", site, *extra)
    assert result.code == 0, result.err
    bundle = site / "outbox" / "fed-r0000-site-a.safetensors"
    for f in (bundle, Path(f"{bundle}.sig")):
        shutil.copy(f, hub / "inbox" / f.name)
    return bundle


def enroll_officer(hub: Path, keys: Path, officer: str, cli, key_type: str = "ed25519") -> None:
    make_key(keys / officer, key_type)
    pub = keys / f"{officer}.pub"
    enrolled = cli(
        "hub", "enroll", hub, officer, pub, "--fingerprint", fingerprint(pub), "--role", "release"
    )
    assert enrolled.code == 0, enrolled.err


@pytest.mark.slow
def test_release_sign_off_m_of_n(tmp_path: Path, cli) -> None:
    hub, keys, site = one_site_hub(tmp_path, cli, "--release-signers", "2")
    bundle = train_and_carry(hub, site, cli)
    enroll_officer(hub, keys, "qa", cli)
    # too few officers for the final package: the hub says so before aggregating
    refused = cli("aggregate", hub)
    assert refused.code == 2 and "release-officers-missing" in refused.err
    enroll_officer(hub, keys, "cmo", cli, "ecdsa-p256")
    enroll_officer(hub, keys, "dpo", cli)
    assert cli("aggregate", hub).code == 0
    final = hub / "packages" / "fed-r0001.safetensors"
    release = scan_file(final).manifest.package.release
    assert release.signers_required == 2 and [o.id for o in release.officers] == [
        "cmo",
        "dpo",
        "qa",
    ]
    hub_pub = hub / "hub.pub"
    # officers never sign bundles: their enrolment is limited to flsilo-release
    assert 'namespaces="flsilo-release"' in (hub / "allowed_signers").read_text()
    assert cli("hub", "kit", hub, "qa", "--out", tmp_path / "qa-kit").code == 2

    def verify(m: int):
        return cli("verify", final, "--key", hub_pub, "--require-release", m, "--json")

    assert verify(1).code == 3  # no signature yet
    signed = cli("release", "sign", final, "--key", keys / "qa", "--id", "qa")
    assert signed.code == 0, signed.err
    assert Path(f"{final}.release-qa.sig").exists()
    # inspect names the officers and what sits beside the package for each (text and --json)
    shown = json.loads(cli("inspect", final, "--json").out)["release"]
    assert shown["required"] == 2
    states = {o["id"]: o["signature"] for o in shown["officers"]}
    assert states == {"cmo": "release-missing", "dpo": "release-missing", "qa": "valid"}
    text = cli("inspect", final).out
    assert "2 of 3 officers must sign" in text
    assert "qa: signed" in text and "cmo: not signed yet" in text
    assert fingerprint(keys / "qa.pub") in text
    one = verify(1)
    assert one.code == 3 and "release-not-signed" in one.out  # the package demands 2
    # an outsider, or an officer with another's id, cannot sign
    make_key(keys / "mallory")
    wrong = cli("release", "sign", final, "--key", keys / "mallory", "--id", "dpo")
    assert wrong.code == 2 and "not-an-officer" in wrong.err
    assert cli("release", "sign", final, "--key", keys / "cmo", "--id", "cmo").code == 0
    two = verify(2)
    assert two.code == 0, two.out
    assert json.loads(two.out)["files"][0]["release_signed_by"] == ["cmo", "qa"]
    assert verify(3).code == 3
    # a copied signature under another officer's name does not count
    shutil.copy(f"{final}.release-qa.sig", f"{final}.release-dpo.sig")
    assert verify(3).code == 3
    assert "dpo: INVALID (unknown-signer)" in cli("inspect", final).out
    # a signature over another file does not count either
    Path(f"{final}.release-cmo.sig").write_bytes(Path(f"{bundle}.sig").read_bytes())
    assert verify(2).code == 3
    # release sign-off is not asked of non-final packages
    r0 = hub / "packages" / "fed-r0000.safetensors"
    assert cli("release", "sign", r0, "--key", keys / "qa", "--id", "qa").code == 3


@pytest.mark.slow
@needs_ssh_keygen
def test_stock_ssh_keygen_verifies_a_release_signature(tmp_path: Path, cli) -> None:
    hub, keys, site = one_site_hub(tmp_path, cli, "--release-signers", "1")
    train_and_carry(hub, site, cli)
    enroll_officer(hub, keys, "qa", cli, "ecdsa-p256")
    assert cli("aggregate", hub).code == 0
    final = hub / "packages" / "fed-r0001.safetensors"
    assert cli("release", "sign", final, "--key", keys / "qa", "--id", "qa").code == 0
    ok = stock_verify(
        str(hub / "allowed_signers"),
        "qa",
        "flsilo-release",
        f"{final}.release-qa.sig",
        final.read_bytes(),
    )
    assert ok.returncode == 0, ok.stderr
    # and a stock ssh-keygen signature (sha512) by the officer counts for flsilo
    Path(f"{final}.release-qa.sig").unlink()
    copy = tmp_path / "copy.safetensors"
    shutil.copy(final, copy)
    stock = ssh_keygen("-Y", "sign", "-f", str(keys / "qa"), "-n", "flsilo-release", str(copy))
    assert stock.returncode == 0, stock.stderr
    shutil.move(f"{copy}.sig", f"{final}.release-qa.sig")
    assert cli("verify", final, "--key", hub / "hub.pub", "--require-release", "1").code == 0


@pytest.mark.slow
def test_expired_package_is_refused_unless_overridden_and_never_affects_verify(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1577836800")  # the hub's clock says 2020-01-01
    hub, _keys, site = one_site_hub(tmp_path, cli, "--package-ttl", "30")
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    package = site / "packages" / "fed-r0000.safetensors"
    assert scan_file(package).manifest.package.expires_at == "2020-01-31T00:00:00Z"
    refused = cli("train", package, "--site", site)
    assert refused.code == 3
    assert "package-expired" in refused.err and "2020-01-31T00:00:00Z" in refused.err
    assert not list((site / "outbox").glob("*.safetensors"))
    assert cli("verify", package, "--key", hub / "hub.pub").code == 0
    bundle = train_and_carry(hub, site, cli, "--accept-expired")
    override = scan_file(bundle).manifest.bundle.expired_package_accepted
    assert override is not None and override > "2020-01-31"
    assert cli("aggregate", hub).code == 0
    final = scan_file(hub / "packages" / "fed-r0001.safetensors").manifest.package
    assert final.final and final.expires_at is None
    assert cli("audit", hub, *hub_root(hub)).code == 0


def test_package_ttl_zero_means_no_expiry_and_default_is_generous(tmp_path: Path, cli) -> None:
    make_key(tmp_path / "hub")
    for ttl, expect_days in (("0", None), (None, 90)):
        hub = tmp_path / f"hub-{ttl}"
        args = [
            "hub",
            "init",
            hub,
            "--federation",
            "fed",
            "--model",
            "logreg",
            "--classes",
            "a,b",
            "--input-shape",
            "4",
            "--key",
            tmp_path / "hub",
        ]
        if ttl is not None:
            args += ["--package-ttl", ttl]
        assert cli(*args).code == 0
        pkg = scan_file(hub / "packages" / "fed-r0000.safetensors").manifest
        if expect_days is None:
            assert pkg.package.expires_at is None
        else:
            from flsilo.format.manifest import iso_to_epoch

            days = (iso_to_epoch(pkg.package.expires_at) - iso_to_epoch(pkg.created_at)) / 86400
            assert days == expect_days


@pytest.mark.slow
def test_a_statistics_bundle_records_an_accepted_expired_package(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed-form round's bundle says an expired package was accepted, like a trained one."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1577836800")  # the hub's clock says 2020-01-01
    hub, _keys, site = one_site_hub(
        tmp_path, cli, "--schedule", "closed-form", "--package-ttl", "30", "--min-sites", "1"
    )
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    bundle = train_and_carry(hub, site, cli, "--accept-expired")
    info = scan_file(bundle).manifest.bundle
    assert info is not None and info.reveals  # a statistics bundle
    assert (
        info.expired_package_accepted is not None and info.expired_package_accepted > "2020-01-31"
    )


@pytest.mark.slow
def test_a_release_officer_revoked_after_signing_no_longer_counts(tmp_path: Path, cli) -> None:
    """Checked against the hub's allowed_signers, the signature of an officer the hub revoked
    after it signed is named and not counted toward --require-release."""
    hub, keys, site = one_site_hub(tmp_path, cli, "--release-signers", "1")
    train_and_carry(hub, site, cli)
    enroll_officer(hub, keys, "qa", cli)
    enroll_officer(hub, keys, "cmo", cli)
    assert cli("aggregate", hub).code == 0
    final = hub / "packages" / "fed-r0001.safetensors"
    assert cli("release", "sign", final, "--key", keys / "qa", "--id", "qa").code == 0
    signers = hub / "allowed_signers"

    def verify(m: int, *extra: str):
        return cli("verify", final, "--signers", signers, "--require-release", m, *extra)

    assert verify(1).code == 0
    assert cli("hub", "revoke", hub, "qa").code == 0
    refused = verify(1)
    assert refused.code == 3 and "error[release-not-signed]" in refused.err, refused.err
    assert "0 of the 1 required" in refused.err
    assert "qa's signature does not count: key of 'qa' was revoked" in refused.err
    # another officer's signature still counts; the revoked one is named, not counted
    assert cli("release", "sign", final, "--key", keys / "cmo", "--id", "cmo").code == 0
    shown = verify(1, "--json")
    assert shown.code == 0, shown.out
    (row,) = json.loads(shown.out)["files"]
    assert row["release_signed_by"] == ["cmo"]
    assert [u["officer"] for u in row["release_not_counted"]] == ["qa"]
    assert "revoked" in row["release_not_counted"][0]["reason"]
    text = verify(1)
    assert "released by cmo" in text.out and "not counted: qa" in text.out
    assert verify(2).code == 3  # two signatures sit beside it, one counts
