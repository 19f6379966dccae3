"""Every reader of an untrusted small file is bounded: a signature, a checksum list, a key or a
sigstore bundle that is ``/dev/zero`` or a 3 GiB (sparse) file gets one line with a code,
never a MemoryError or a hang. A source scan lists the whole-file readers that remain, so a
new unbounded reader fails here until it is bounded or its file is shown to be the tool's own.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flsilo.format.artifact import read_signature_bytes, scan_file
from flsilo.runtime.errors import FlsiloError
from flsilo.signing.keys import load_public_key
from flsilo.signing.release import _check_officer, release_sig_path
from flsilo.signing.trust import AllowedSigners
from hub_kit import wheelhouse as wh
from hub_kit.archive import check_sums as check_round_sums
from tests.conftest import Federation, hub_root, make_key, source_calls

BIG = 3 << 30


def plant(path: Path, how: str) -> None:
    """Make ``path`` a link to /dev/zero or a sparse 3 GiB file (no disk used)."""
    path.unlink(missing_ok=True)
    if how == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        with path.open("wb") as fh:
            fh.truncate(BIG)


def refused(call: Callable[[], object]) -> FlsiloError:
    with pytest.raises(FlsiloError) as info:
        call()
    err = info.value
    assert "\n" not in err.one_line()
    return err


HOW = ["dev-zero", "sparse-3GiB"]


def codes(how: str, big: str) -> set[str]:
    return {"not-regular-file"} if how == "dev-zero" else {big}


@pytest.mark.parametrize("how", HOW)
def test_bundle_and_package_signature(tmp_path: Path, how: str) -> None:
    target = tmp_path / "x.safetensors"
    target.write_bytes(b"x")
    plant(tmp_path / "x.safetensors.sig", how)
    err = refused(lambda: read_signature_bytes(target))
    assert err.code in codes(how, "signature-too-large")


@pytest.mark.parametrize("how", HOW)
def test_release_officer_signature(federation: Federation, how: str) -> None:
    scan = scan_file(federation.hub / "packages" / "fed-r0000.safetensors")
    plant(release_sig_path(scan.path, "qa"), how)
    key = (federation.keys / "hub.pub").read_text()
    err = refused(lambda: _check_officer(scan, "qa", key))
    assert err.code in codes(how, "signature-too-large")


def _wheelhouse(tmp_path: Path) -> Path:
    out = tmp_path / "wheels"
    out.mkdir()
    (out / "requirements.txt").write_text("flsilo==0.1.0\n")
    wh.write_sums(out)
    return out


@pytest.mark.parametrize("how", HOW)
def test_wheelhouse_signature_and_sums(tmp_path: Path, how: str) -> None:
    out = _wheelhouse(tmp_path)
    pub = load_public_key(Path(f"{make_key(tmp_path / 'hub')}.pub"))
    plant(out / f"{wh.SUMS}.sig", how)
    assert refused(lambda: wh.verify(out, pub)).code in codes(how, "signature-too-large")
    (out / f"{wh.SUMS}.sig").unlink()
    plant(out / wh.SUMS, how)
    assert refused(lambda: wh.check_sums(out)).code in codes(how, "too-large")


@pytest.mark.parametrize("how", HOW)
def test_public_key_and_allowed_signers(tmp_path: Path, how: str) -> None:
    key = tmp_path / "hub.pub"
    plant(key, how)
    # a key file the user names may be a link, but not to a device
    assert refused(lambda: load_public_key(key)).code in {"not-regular-file", "too-large"}
    signers = tmp_path / "allowed_signers"
    plant(signers, how)
    assert refused(lambda: AllowedSigners.load(signers)).code in {"not-regular-file", "too-large"}


@pytest.mark.parametrize("how", HOW)
def test_federation_toml_of_a_kit(tmp_path: Path, how: str) -> None:
    from flsilo.plans import federation as fed

    path = tmp_path / fed.FEDERATION_FILE
    plant(path, how)
    assert refused(lambda: fed.load(path)).code in {"not-regular-file", "too-large"}


@pytest.mark.parametrize("how", HOW)
def test_round_archive_sums(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "0000"
    folder.mkdir()
    plant(folder / "SHA256SUMS", how)
    problem = check_round_sums(folder)
    assert problem is not None and ("not a regular file" in problem or "more than" in problem)


@pytest.mark.parametrize("how", HOW)
def test_event_log_signature(federation: Federation, cli, how: str) -> None:
    plant(federation.hub / "events.jsonl.sig", how)
    result = cli("hub", "status", federation.hub)
    want = "not-regular-file" if how == "dev-zero" else "signature-too-large"
    assert result.code == 4 and f"error[{want}]" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1
    audit = cli("audit", federation.hub, *hub_root(federation.hub), "--json")
    assert audit.code in (3, 4), audit.out
    assert "MemoryError" not in audit.out + audit.err


@pytest.mark.parametrize("how", HOW)
def test_sigstore_bundle_beside_a_package(federation: Federation, cli, how: str) -> None:
    package = federation.hub / "packages" / "fed-r0000.safetensors"
    plant(Path(f"{package}.sigstore.json"), how)
    result = cli("verify", package, "--key", federation.keys / "hub.pub", "--json")
    assert result.code == 4, result.out
    code = json.loads(result.out)["files"][0]["error"]["code"]
    assert code in {"not-regular-file", "too-large"}


# Whole-file reads (``.read_bytes()`` / ``.read_text(``) that remain, per module, and why each
# reads a file that is the tool's own or the operator's, never one carried from elsewhere.
# A new one fails the scan: bound it with flsilo.fs.untrusted.read_bounded, or add it here with
# the reason its file cannot be hostile.
OWN_FILES = {
    "flsilo/runtime/cpu.py": (3, "the kernel's cgroup files"),
    "flsilo/plans/planfile.py": (1, "the operator's own plan file (hub init --config)"),
    "flsilo/models/registry.py": (1, "a model's own Python source, hashed"),
    "hub_kit/wheelhouse.py": (3, "the source tree and pip's own report while building"),
    "flsilo/cli/common.py": (1, "the operator's --passphrase-file"),
    "flsilo/signing/keys.py": (1, "the operator's own private key"),
    "flsilo/fs/hashchain.py": (1, "the hub's event log and a site's record (large, own)"),
    "hub_kit/anchor.py": (1, "the hub's own log, when it is signed as it is (hub init)"),
    "hub_kit/workspace.py": (1, "the hub's own allowed_signers, compared with the log"),
    "hub_kit/audit.py": (2, "the audited log and allowed_signers (compared, not parsed blind)"),
    "site_kit/privacy.py": (2, "the site's own ledger and secret"),
    "site_kit/record.py": (1, "the site's own record secret"),
    "site_kit/checkpoint.py": (1, "the site's own training progress"),
    "site_kit/data/index.py": (1, "the site's own index of its data (about 200 bytes a record)"),
    "site_kit/state.py": (1, "the site's own rollback state"),
}


def whole_file_reads(calls: tuple[ast.Call, ...]) -> int:
    return sum(
        isinstance(node.func, ast.Attribute) and node.func.attr in ("read_bytes", "read_text")
        for node in calls
    )


def test_every_whole_file_read_is_listed() -> None:
    found = {}
    for path, calls in source_calls().items():  # flsilo, hub_kit, site_kit and sim_kit
        n = whole_file_reads(calls)
        if n:
            found[path] = n
    unlisted = {p: n for p, n in found.items() if n > OWN_FILES.get(p, (0, ""))[0]}
    assert unlisted == {}, (
        "new whole-file reads: bound them with flsilo.fs.untrusted.read_bounded (an untrusted "
        f"file) or list them in OWN_FILES with the reason: {unlisted}"
    )


def test_untrusted_read_refuses_before_reading(tmp_path: Path) -> None:
    """The helper itself: the size comes from fstat, nothing is read from a huge file."""
    from flsilo.fs.untrusted import MAX_SIGNATURE_BYTES, read_signature_file

    sig = tmp_path / "a.sig"
    assert read_signature_file(sig) is None
    plant(sig, "sparse-3GiB")
    assert refused(lambda: read_signature_file(sig)).code == "signature-too-large"
    sig.unlink()
    os.mkfifo(sig)
    assert refused(lambda: read_signature_file(sig)).code == "not-regular-file"
    sig.unlink()
    sig.write_bytes(b"x" * MAX_SIGNATURE_BYTES)
    assert read_signature_file(sig) == b"x" * MAX_SIGNATURE_BYTES
