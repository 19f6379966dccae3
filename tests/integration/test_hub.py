"""The hub through the CLI: every acceptance rule, quarantine, crash and rerun, audit."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flsilo.format import manifest as mf
from flsilo.format.artifact import scan_file, sig_path, write_artifact
from flsilo.format.tensorfile import RawTensor
from flsilo.signing.keys import load_private_key
from tests.conftest import Federation, fingerprint, hub_root, make_key, tree_digest


def resign(
    src: Path,
    dest: Path,
    key_path: Path,
    *,
    mutate: Any = None,
    tensors: Any = None,
    **bundle_changes: Any,
) -> Path:
    """Rewrite a bundle with changed manifest fields or tensors, validly signed by key_path."""
    buffer = io.BytesIO()
    scan = scan_file(src, copy_to=buffer)
    data = buffer.getvalue()
    raw = tensors or {
        t.name: RawTensor(
            t.dtype,
            t.shape,
            memoryview(
                bytearray(data[scan.header.data_start + t.begin : scan.header.data_start + t.end])
            ),
        )
        for t in scan.header.tensors
    }
    m = scan.manifest
    assert m.bundle is not None
    top = {
        k: bundle_changes.pop(k) for k in ("federation", "round", "model") if k in bundle_changes
    }
    bundle = mf.BundleInfo(**{**m.bundle.__dict__, **bundle_changes})
    manifest = mf.Manifest(**{**m.__dict__, **top, "bundle": bundle})
    if mutate:
        mutate(raw)
    write_artifact(dest, raw, manifest, load_private_key(key_path, lambda _p: b""), overwrite=True)
    return dest


def rows(out: str) -> dict[str, Any]:
    return {r["file"]: r for r in json.loads(out)["report"]["rows"]}


def test_a_round_end_to_end(federation: Federation, cli) -> None:
    federation.carry()
    inbox_before = tree_digest(federation.hub / "inbox")
    result = cli("aggregate", federation.hub)
    assert result.code == 0, result.err
    package = Path(result.out.strip().splitlines()[-1])
    assert package.name == "fed-r0001.safetensors"
    assert tree_digest(federation.hub / "inbox") == inbox_before
    assert cli("verify", package, "--signers", federation.hub / "allowed_signers").code == 0
    archived = sorted((federation.hub / "rounds" / "0000").glob("*.safetensors"))
    assert [p.name for p in archived] == [b.name for b in federation.bundles.values()]
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--replay", "--json")
    assert audit.code == 0, audit.out
    names = {c["name"] for c in json.loads(audit.out)["audit"]["checks"]}
    assert {"replay r0001", "provenance r0001", "event log chain"} <= names
    inspect = cli("inspect", package, "--json")
    prov = json.loads(inspect.out)["manifest"]["package"]["provenance"]
    assert [i["site"] for i in prov["inputs"]] == ["site-a", "site-b"]
    assert [i["samples"] for i in prov["inputs"]] == [270, 180]


def _rule_cases() -> list[tuple[str, Any, str]]:
    def unenrolled(f: Federation, dest: Path) -> None:
        stranger = make_key(f.root / "stranger")
        resign(f.bundles["site-a"], dest, stranger)

    def impersonation(f: Federation, dest: Path) -> None:
        resign(f.bundles["site-a"], dest, f.keys / "site-a", site="site-b")

    def revoked(f: Federation, dest: Path) -> None:
        from flsilo.cli.app import run

        assert run(["hub", "revoke", str(f.hub), "site-a"]) == 0
        shutil.copy(f.bundles["site-a"], dest)
        shutil.copy(sig_path(f.bundles["site-a"]), sig_path(dest))

    def nan(f: Federation, dest: Path) -> None:
        def poison(raw: dict) -> None:
            name = next(iter(raw))
            arr = np.frombuffer(raw[name].data, np.float32).copy()
            arr[0] = np.nan
            raw[name] = RawTensor(raw[name].dtype, raw[name].shape, memoryview(arr).cast("B"))

        resign(f.bundles["site-a"], dest, f.keys / "site-a", mutate=poison)

    def other_shape(f: Federation, dest: Path) -> None:
        tensors = {
            "0.weight": RawTensor.from_numpy(np.zeros((10, 63), np.float32)),
            "0.bias": RawTensor.from_numpy(np.zeros(10, np.float32)),
        }
        resign(f.bundles["site-a"], dest, f.keys / "site-a", tensors=tensors)

    def wrong_namespace(f: Federation, dest: Path) -> None:
        import hashlib

        from flsilo.signing.sshsig import sign_digest

        shutil.copy(f.bundles["site-a"], dest)
        key = load_private_key(f.keys / "site-a", lambda _p: b"")
        sig_path(dest).write_bytes(
            sign_digest(key, "flsilo-package", hashlib.sha256(dest.read_bytes()).digest())
        )

    def missing_sig(f: Federation, dest: Path) -> None:
        shutil.copy(f.bundles["site-a"], dest)

    return [
        ("unenrolled signer", unenrolled, "unknown-signer"),
        ("signed as another site", impersonation, "principal-mismatch"),
        ("revoked site", revoked, "key-revoked"),
        (
            "wrong federation",
            lambda f, d: resign(f.bundles["site-a"], d, f.keys / "site-a", federation="other"),
            "wrong-federation",
        ),
        (
            "future round",
            lambda f, d: resign(f.bundles["site-a"], d, f.keys / "site-a", round=1),
            "future-round",
        ),
        (
            "wrong base package",
            lambda f, d: resign(
                f.bundles["site-a"], d, f.keys / "site-a", base_package_sha256="ab" * 32
            ),
            "wrong-base",
        ),
        (
            "another model description",
            lambda f, d: resign(
                f.bundles["site-a"],
                d,
                f.keys / "site-a",
                model=dataclasses.replace(
                    scan_file(f.bundles["site-a"]).manifest.model, classes=tuple("abcdefghij")
                ),
            ),
            "wrong-model",
        ),
        ("different tensors", other_shape, "wrong-tensors"),
        ("NaN weights", nan, "non-finite"),
        (
            "too many samples",
            lambda f, d: resign(f.bundles["site-a"], d, f.keys / "site-a", num_samples=10**9),
            "sample-count",
        ),
        ("wrong namespace", wrong_namespace, "wrong-namespace"),
        ("missing signature", missing_sig, "missing-signature"),
    ]


@pytest.mark.parametrize("make, code", [pytest.param(*c[1:], id=c[0]) for c in _rule_cases()])
def test_every_acceptance_rule_rejects(federation: Federation, cli, make: Any, code: str) -> None:
    federation.carry("site-b")
    bad = federation.hub / "inbox" / "fed-r0000-site-a.safetensors"
    make(federation, bad)
    inbox_before = tree_digest(federation.hub / "inbox")
    result = cli("aggregate", federation.hub, "--json")
    assert result.code == 1  # min-sites 2 not met: one of the two was rejected
    report = rows(result.out)
    assert report[bad.name]["verdict"] == "rejected"
    assert report[bad.name]["code"] == code
    assert report["fed-r0000-site-b.safetensors"]["verdict"] == "accepted"
    assert tree_digest(federation.hub / "inbox") == inbox_before
    reasons = list((federation.hub / "quarantine" / "r0000").glob("*.reason.txt"))
    assert len(reasons) == 1 and json.loads(reasons[0].read_text())["code"] == code
    events = [
        json.loads(line) for line in (federation.hub / "events.jsonl").read_text().splitlines()
    ]
    assert events[-1]["event"] == "reject" and events[-1]["code"] == code
    assert not (federation.hub / "packages" / "fed-r0001.safetensors").exists()
    # With the threshold lowered the round completes on the good bundle, and records the reject.
    done = cli("aggregate", federation.hub, "--min-sites", "1", "--json")
    assert done.code == 0, done.err
    prov = json.loads(
        cli("inspect", federation.hub / "packages" / "fed-r0001.safetensors", "--json").out
    )
    assert [r["reason"] for r in prov["manifest"]["package"]["provenance"]["rejects"]] == [code]
    assert cli("audit", federation.hub, *hub_root(federation.hub), "--replay").code == 0


def test_conflicting_duplicates_are_both_refused(federation: Federation, cli) -> None:
    federation.carry()
    twin = federation.hub / "inbox" / "copy-of-site-a.safetensors"
    resign(federation.bundles["site-a"], twin, federation.keys / "site-a", num_samples=200)
    result = cli("aggregate", federation.hub, "--min-sites", "1", "--json")
    report = rows(result.out)
    assert (
        report[twin.name]["verdict"]
        == report["fed-r0000-site-a.safetensors"]["verdict"]
        == "rejected"
    )
    assert report[twin.name]["code"] == "conflicting-duplicate"


def test_identical_copy_counts_once(federation: Federation, cli) -> None:
    federation.carry()
    shutil.copy(federation.bundles["site-a"], federation.hub / "inbox" / "again.safetensors")
    shutil.copy(
        sig_path(federation.bundles["site-a"]), federation.hub / "inbox" / "again.safetensors.sig"
    )
    report = rows(cli("aggregate", federation.hub, "--json").out)
    assert report["again.safetensors"]["verdict"] == "skipped"
    assert report["again.safetensors"]["site"] == "site-a"  # the manifest's, not the name's


def test_late_bundle_admitted_by_staleness_policy(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    # round 1: site-a's round-0 bundle arrives late; by default that is refused
    late = federation.hub / "inbox" / "late.safetensors"
    resign(federation.bundles["site-a"], late, federation.keys / "site-a", num_samples=271)
    refused = rows(cli("aggregate", federation.hub, "--min-sites", "1", "--json").out)
    assert refused["late.safetensors"]["verdict"] == "rejected"
    assert refused["late.safetensors"]["code"] == "stale"
    # ... unless the federation declares a staleness policy, which admits it at a discount
    toml = federation.hub / "federation.toml"
    toml.write_text(toml.read_text().replace("max_staleness = 0", "max_staleness = 1"))
    shutil.copy(federation.bundles["site-a"], federation.hub / "inbox" / "late-copy.safetensors")
    report = rows(cli("aggregate", federation.hub, "--min-sites", "1", "--json").out)
    assert report["late.safetensors"]["verdict"] == "accepted (late by 1)"
    assert report["late.safetensors"]["weight"] == pytest.approx(271 * 0.5)
    assert report["fed-r0000-site-a.safetensors"]["verdict"] == "skipped"  # already used in round 0
    assert report["fed-r0000-site-a.safetensors"]["site"] == "site-a"


def test_same_bundles_in_any_order_give_identical_packages(
    federation: Federation, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1790000000")
    other = federation.copy(tmp_path / "other")
    federation.carry()
    # the second hub receives them under names that sort the other way round
    for site, prefix in (("site-a", "z"), ("site-b", "a")):
        b = other.bundles[site]
        shutil.copy(b, other.hub / "inbox" / f"{prefix}-{b.name}")
        shutil.copy(sig_path(b), other.hub / "inbox" / f"{prefix}-{b.name}.sig")
    assert cli("aggregate", federation.hub).code == 0
    assert cli("aggregate", other.hub).code == 0
    name = "packages/fed-r0001.safetensors"
    assert (federation.hub / name).read_bytes() == (other.hub / name).read_bytes()
    assert (federation.hub / f"{name}.sig").read_bytes() == (other.hub / f"{name}.sig").read_bytes()


@pytest.mark.parametrize(
    "crash_at", ["hub_kit.build.write_package_stream", "hub_kit.anchor.write_bytes"]
)
def test_crash_then_rerun_completes(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    federation.carry()
    log_before = (federation.hub / "events.jsonl").read_bytes()
    module, name = crash_at.rsplit(".", 1)
    import importlib

    target = importlib.import_module(module)
    real = getattr(target, name)

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, crash)
    assert cli("aggregate", federation.hub).code == 130
    assert (federation.hub / "events.jsonl").read_bytes() == log_before  # old state
    status = json.loads(cli("hub", "status", federation.hub, "--json").out)
    assert status["round"] == 0
    monkeypatch.setattr(target, name, real)
    assert cli("aggregate", federation.hub).code == 0  # rerun completes
    assert json.loads(cli("hub", "status", federation.hub, "--json").out)["round"] == 1
    assert cli("audit", federation.hub, *hub_root(federation.hub), "--replay").code == 0


def test_audit_catches_a_tampered_archive_and_log(federation: Federation, cli) -> None:
    federation.carry()
    assert cli("aggregate", federation.hub).code == 0
    archived = federation.hub / "rounds" / "0000" / "fed-r0000-site-a.safetensors"
    data = bytearray(archived.read_bytes())
    data[-1] ^= 1
    archived.write_bytes(bytes(data))
    result = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert result.code == 3
    failed = [c for c in json.loads(result.out)["audit"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["bundle r0000 site-a", "SHA256SUMS r0000"]
    log = federation.hub / "events.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace("site-a", "site-x")
    log.write_text("\n".join(lines) + "\n")
    assert cli("audit", federation.hub, *hub_root(federation.hub)).code == 3


def test_enrolment_requires_the_confirmed_fingerprint(federation: Federation, cli) -> None:
    key = make_key(federation.root / "site-c")
    before = tree_digest(federation.hub)
    wrong = fingerprint(federation.keys / "site-a.pub")
    result = cli("hub", "enroll", federation.hub, "site-c", f"{key}.pub", "--fingerprint", wrong)
    assert result.code == 3 and "fingerprint-mismatch" in result.err
    assert tree_digest(federation.hub) == before
    ok = cli(
        "hub",
        "enroll",
        federation.hub,
        "site-c",
        f"{key}.pub",
        "--fingerprint",
        fingerprint(Path(f"{key}.pub")),
    )
    assert ok.code == 0
    assert "site-c" in (federation.hub / "allowed_signers").read_text()


def test_status_shows_who_is_missing(federation: Federation, cli) -> None:
    federation.carry("site-a")
    qa = Path(f"{make_key(federation.keys / 'qa')}.pub")
    enrolled = cli("hub", "enroll", federation.hub, "qa", qa, "--fingerprint", fingerprint(qa),
                   "--role", "release")  # fmt: skip
    assert enrolled.code == 0, enrolled.err
    status = json.loads(cli("hub", "status", federation.hub, "--json").out)
    assert status["missing"] == ["site-b"] and status["round"] == 0  # an officer sends none
    assert [(s["site"], s["role"]) for s in status["sites"]] == [
        ("site-a", "site"),
        ("site-b", "site"),
        ("qa", "release"),
    ]
    rows = [line.split() for line in cli("hub", "status", federation.hub).out.splitlines()]
    assert ["qa", fingerprint(qa), "officer", "-"] in rows
    assert ["site-b", fingerprint(federation.keys / "site-b.pub"), "active", "-"] in rows


def test_hand_edited_allowed_signers_is_refused(federation: Federation, cli) -> None:
    federation.carry()
    signers = federation.hub / "allowed_signers"
    stranger = make_key(federation.root / "evil")
    signers.write_text(signers.read_text() + f"site-z {Path(f'{stranger}.pub').read_text()}")
    result = cli("aggregate", federation.hub)
    assert result.code == 3 and "signers-edited" in result.err


def test_kit_for_unknown_site_and_reinit_are_refused(
    federation: Federation, cli, tmp_path: Path
) -> None:
    assert cli("hub", "kit", federation.hub, "site-z", "--out", tmp_path / "k").code == 2
    again = cli(
        "hub",
        "init",
        federation.hub,
        "--federation",
        "fed",
        "--model",
        "logreg",
        "--classes",
        "a,b",
        "--input-shape",
        "3",
        "--key",
        federation.keys / "hub",
    )
    assert again.code == 2 and "exists" in again.err


def test_federation_completes(federation_template: Federation, tmp_path: Path, cli) -> None:
    fed = federation_template.copy(tmp_path / "fed")
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    for site, site_dir in fed.sites.items():
        shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors", site_dir / "packages")
        shutil.copy(fed.hub / "packages" / "fed-r0001.safetensors.sig", site_dir / "packages")
        assert (
            cli("train", site_dir / "packages" / "fed-r0001.safetensors", "--site", site_dir).code
            == 0
        )
        for f in (site_dir / "outbox").glob("fed-r0001-*"):
            shutil.copy(f, fed.hub / "inbox")
    final = cli("aggregate", fed.hub, "--json")
    assert final.code == 0 and json.loads(final.out)["report"]["final"] is True
    again = cli("aggregate", fed.hub)
    assert again.code == 2 and "federation-complete" in again.err
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0
    # a final package cannot be trained on
    site_dir = fed.sites["site-a"]
    shutil.copy(fed.hub / "packages" / "fed-r0002.safetensors", site_dir / "packages")
    shutil.copy(fed.hub / "packages" / "fed-r0002.safetensors.sig", site_dir / "packages")
    refused = cli("train", site_dir / "packages" / "fed-r0002.safetensors", "--site", site_dir)
    assert refused.code == 3 and "final-package" in refused.err


def test_a_second_writer_is_refused_while_the_lock_is_held(
    federation: Federation, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flsilo.fs.atomic import WorkspaceLock

    monkeypatch.setenv("FLSILO_LOCK_WAIT", "0.2")
    federation.carry()
    with WorkspaceLock(federation.hub, "hub workspace"):
        result = cli("aggregate", federation.hub)
    assert result.code == 1 and "locked" in result.err
    assert cli("aggregate", federation.hub).code == 0  # released: the round completes
