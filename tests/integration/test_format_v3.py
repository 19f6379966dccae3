"""Format version 3: version-2 files stay readable, newer files and logs are refused with an
upgrade hint, and the preprocessing contract travels signed in every package."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from flsilo.fs.hashchain import canonical_line
from tests.conftest import make_key

V2 = Path(__file__).parent.parent / "fixtures" / "v2"


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    """A private copy of the committed version-2 federation (hub workspace and bundles)."""
    shutil.copytree(V2, tmp_path / "v2")
    return tmp_path / "v2"


def test_v2_package_bundle_and_log_verify_inspect_and_replay(cli, v2: Path) -> None:
    result = cli("audit", v2 / "hub", "--hub-key", v2 / "hub.pub", "--replay", "--json")
    assert result.code == 0, result.err + result.out
    assert json.loads(result.out)["ok"] is True
    files = [v2 / "hub/packages/fed-r0001.safetensors"]
    files += sorted((v2 / "bundles").glob("*.safetensors"))
    result = cli("verify", "--signers", v2 / "hub/allowed_signers", *files)
    assert result.code == 0, result.err
    result = cli("inspect", files[0])
    assert result.code == 0 and "version 2" in result.out
    assert "resize stretch, intensity 8bit" in result.out  # version 2 meant exactly that
    for bundle in files[1:]:
        report = json.loads(cli("inspect", bundle, "--json").out)
        assert report["manifest"]["format_version"] == 2
        assert report["manifest"]["bundle"]["plan"]["augment"]["hflip"] is False


def _rewrite_header(path: Path, old: bytes, new: bytes) -> None:
    """Replace bytes of a safetensors header in place (same length: offsets stay)."""
    assert len(old) == len(new)
    raw = bytearray(path.read_bytes())
    (size,) = struct.unpack("<Q", raw[:8])
    header = bytes(raw[8 : 8 + size])
    assert header.count(old) == 1
    raw[8 : 8 + size] = header.replace(old, new)
    path.write_bytes(bytes(raw))


def test_a_newer_package_is_refused_with_an_upgrade_hint(cli, v2: Path) -> None:
    package = v2 / "hub/packages/fed-r0001.safetensors"
    _rewrite_header(package, b'format_version\\":2', b'format_version\\":4')
    result = cli("inspect", package)
    assert result.code == 4
    assert "manifest-version" in result.err and "format version 4" in result.err
    assert "upgrade flsilo" in result.err
    _rewrite_header(package, b'format_version\\":4', b'format_version\\":1')
    result = cli("inspect", package)
    assert result.code == 4 and "manifest-version" in result.err
    assert "older flsilo" in result.err


def test_a_v2_manifest_with_v3_fields_is_malformed(cli, v2: Path) -> None:
    package = v2 / "hub/packages/fed-r0001.safetensors"
    _rewrite_header(package, b'fedprox_mu\\":0.0,', b'augment\\":{}    ,')
    result = cli("inspect", package)
    assert result.code == 4 and "bad-manifest" in result.err
    assert "version-2 package plan holds version-3 fields" in result.err


def test_a_newer_federation_file_is_refused_with_an_upgrade_hint(cli, v2: Path) -> None:
    toml = v2 / "hub/federation.toml"
    toml.write_text(toml.read_text().replace("format_version = 2", "format_version = 4"))
    result = cli("hub", "status", v2 / "hub")
    assert result.code == 4
    assert "federation-version" in result.err and "upgrade flsilo" in result.err


def test_a_log_with_an_unknown_event_kind_is_refused_with_an_upgrade_hint(cli, v2: Path) -> None:
    log = v2 / "hub/events.jsonl"
    lines = log.read_bytes().split(b"\n")[:-1]
    prev = hashlib.sha256(lines[-1]).hexdigest()
    record = {"seq": len(lines) + 1, "time": "2027-01-01T00:00:00Z", "event": "stats-v4"}
    record["prev"] = prev
    log.write_bytes(log.read_bytes() + canonical_line(record) + b"\n")
    result = cli("hub", "status", v2 / "hub")
    assert result.code == 4, result.err
    assert "log-version" in result.err and "'stats-v4'" in result.err
    assert "upgrade flsilo" in result.err
    # a line of an unknown kind whose link is broken is damage, not a newer writer
    broken = dict(record, seq=len(lines) + 2, prev="0" * 64)
    log.write_bytes(log.read_bytes() + canonical_line(broken) + b"\n")
    lines = log.read_bytes().split(b"\n")[:-1]
    log.write_bytes(b"\n".join([*lines[:-2], lines[-1]]) + b"\n")
    result = cli("hub", "status", v2 / "hub")
    assert result.code == 3 and "log-broken" in result.err


INIT = ["--federation", "fed", "--model", "mlp", "--classes", "a,b", "--batch-size", "8"]


def _init(cli, tmp_path: Path, *extra: object, shape: str = "3,16,16"):
    key = tmp_path / "hub-key"
    if not key.exists():
        make_key(key)
    hub = tmp_path / f"hub{len(list(tmp_path.glob('hub*')))}"
    return hub, cli("hub", "init", hub, *INIT, "--input-shape", shape, "--key", key, *extra)


def test_the_contract_is_signed_into_the_package_and_inspect_shows_it(cli, tmp_path: Path) -> None:
    hub, result = _init(
        cli,
        tmp_path,
        "--resize",
        "shorter-side:0.9",
        "--normalize",
        "imagenet",
        "--augment",
        "hflip,crop:0.6,rotate:10,jitter:0.2,noise:0.01",
    )
    assert result.code == 0, result.err
    toml = (hub / "federation.toml").read_text()
    assert "format_version = 3" in toml
    assert '[plan.preprocess]\nresize = "shorter-side:0.9"' in toml
    assert "[plan.augment]\nhflip = true\ncrop = 0.6" in toml
    package = hub / "packages/fed-r0000.safetensors"
    text = cli("inspect", package)
    assert text.code == 0
    assert "resize shorter-side:0.9, intensity 8bit" in text.out
    assert "normalize imagenet" in text.out
    assert "hflip,crop:0.6,rotate:10,jitter:0.2,noise:0.01" in text.out
    report = json.loads(cli("inspect", package, "--json").out)
    plan = report["manifest"]["package"]["plan"]
    assert report["manifest"]["format_version"] == 3
    assert plan["preprocess"]["resize"] == "shorter-side:0.9"
    assert plan["preprocess"]["normalize"] == "imagenet"
    assert plan["augment"] == {
        "hflip": True,
        "crop": 0.6,
        "rotate": 10.0,
        "jitter": 0.2,
        "noise": 0.01,
    }


@pytest.mark.parametrize(
    ("extra", "shape", "words"),
    [
        (("--resize", "squash"), "3,16,16", "--resize 'squash'"),
        (("--intensity", "12bit"), "3,16,16", "--intensity '12bit' is not known"),
        (("--window", "40"), "1,16,16", "CENTER,WIDTH"),
        (("--normalize", "0.5,0.5/0.2,0.2"), "3,16,16", "2 means for an input of 3"),
        (("--augment", "blur:3"), "3,16,16", "--augment 'blur:3'"),
        (("--impute", "mean,indicator"), "6", "needs the federation's statistics"),
        (("--impute", "constant:0,indicator"), "5", "is odd"),
        (("--normalize", "federation"), "3,16,16", "a stats round first"),
        (("--standardize", "federation"), "4", "a stats round first"),
        (("--frame-rate", "2", "--frames-per-clip", "8"), "3,16,16", "not both"),
    ],
)
def test_bad_preprocessing_is_a_usage_error_that_creates_nothing(
    cli, tmp_path: Path, extra: tuple[str, ...], shape: str, words: str
) -> None:
    hub, result = _init(cli, tmp_path, *extra, shape=shape)
    assert result.code == 2, result.err
    assert words in result.err and "bad-config" in result.err
    assert not hub.exists()


def test_preprocessing_options_lay_over_a_plan_file_one_by_one(cli, tmp_path: Path) -> None:
    printed = cli("hub", "init", "--print-config")
    assert (
        "# Images: stretch, letterbox (pad)" in printed.out
    )  # [plan.preprocess] says what it does
    plan = tmp_path / "plan.toml"
    plan.write_text(
        printed.out.replace('normalize = "none"', 'normalize = "imagenet"').replace(
            'federation = "my-federation"', 'federation = "fed"'
        )
    )
    make_key(tmp_path / "hub-key")
    made = cli(
        "hub", "init", tmp_path / "hub", "--config", plan, "--key", tmp_path / "hub-key",
        "--input-shape", "3,8,8", "--resize", "letterbox", "--augment", "hflip",
    )  # fmt: skip
    assert made.code == 0, made.err
    written = (tmp_path / "hub/federation.toml").read_text()
    assert 'resize = "letterbox"' in written  # typed
    assert 'normalize = "imagenet"' in written  # from the file, kept
    assert "[plan.augment]\nhflip = true" in written
