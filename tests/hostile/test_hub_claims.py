"""Hostile hub claims (``package.hub_evaluation``): a hub-signed package whose claim names a
``primary_metric`` or counts ``objects`` as flsilo never writes them is refused in one line
(bad-manifest, exit 4), never shown or crashed on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flsilo.format import manifest as mf
from flsilo.plans.plan import Schedule
from flsilo.signing.keys import generate_key
from flsilo.signing.sshsig import PACKAGE_NAMESPACE, sign_digest
from tests.hostile.test_corpus import F32_6, header_file

CLAIM = {
    "test_set_sha256": "cd" * 32,
    "test_set_records": 4,
    "data_format": "yolo",
    "data_sha256": "ab" * 32,
    "task": "detect",
    "samples": 4,
    "skipped": 0,
    "figures": {"map50": 0.5, "map": 0.3, "accuracy": 0.5, "loss": 0.2},
    "per_class": {"circle": {"ap50": 0.5}, "square": {"ap50": None}},
    "ci95": {},
    "confusion": [],
    "bootstrap_seed": 3,
    "bootstrap_draws": 50,
    "software": {"flsilo": "t"},
    "objects": {"circle": 3, "square": 0},
}
PLUGIN = {**CLAIM, "task": "mypkg.tasks:TASK", "primary_metric": "macro_f1"}
del PLUGIN["objects"]


def _package(tmp_path: Path, claim: dict) -> Path:
    """A package (round 0, final) carrying ``claim`` as written here, validly signed."""
    m = mf.Manifest(
        kind="package",
        format_version=mf.FORMAT_VERSION,
        federation="fed",
        round=0,
        created_at="2026-11-22T00:00:00Z",
        software={"flsilo": "test"},
        model=mf.ModelInfo("logreg", "0" * 64, ("circle", "square"), (3,)),
        package=mf.PackageInfo(Schedule("one-shot", 1, (1,)), True, None, None, None),
    )
    data = mf.to_jsonable(m)
    data["package"]["hub_evaluation"] = claim
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    weight = {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}
    raw = header_file({"__metadata__": {mf.MANIFEST_KEY: text}, "w": weight}, F32_6)
    path = tmp_path / "fed-r0000.safetensors"
    path.write_bytes(raw)
    sig = sign_digest(generate_key(), PACKAGE_NAMESPACE, hashlib.sha256(raw).digest())
    Path(f"{path}.sig").write_bytes(sig)
    return path


@pytest.mark.parametrize(
    ("claim", "reason"),
    [
        ({**PLUGIN, "primary_metric": 3}, "primary_metric must be a string"),
        ({**PLUGIN, "primary_metric": "x" * 100_000}, "primary_metric is not a figure's key"),
        ({**PLUGIN, "primary_metric": "f1é"}, "primary_metric is not a figure's key"),
        ({**PLUGIN, "primary_metric": "[red]f1"}, "primary_metric is not a figure's key"),
        ({**CLAIM, "primary_metric": "accuracy"}, "a detect hub claim names no primary_metric"),
        ({**CLAIM, "objects": {"circle": "3"}}, "objects.circle must be an integer"),
        ({**CLAIM, "objects": {"circle": -1}}, "fewer than 0 boxes"),
        ({**CLAIM, "objects": {"hexagon": 1}}, "a class it has no row for"),
    ],
)
def test_a_hostile_claim_is_refused_in_one_line(
    tmp_path: Path, cli, claim: dict, reason: str
) -> None:
    path = _package(tmp_path, claim)
    before = path.read_bytes()
    result = cli("inspect", path)
    assert result.code == 4 and "error[bad-manifest]" in result.err and reason in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) <= 2
    assert path.read_bytes() == before


def test_the_claims_flsilo_writes_are_shown(tmp_path: Path, cli) -> None:
    """The control: the same package with the claims as written reads (the detector's box
    counts; a plug-in's named figure)."""
    for claim in (CLAIM, PLUGIN):
        shown = cli("inspect", _package(tmp_path, claim))
        assert shown.code == 0 and "hub claim" in shown.out, shown.err
