"""``hub init --init-weights START``: the ``backbone import`` record travels in every package."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import build_federation, fingerprint, make_key

torch = pytest.importorskip("torch")
MLP = "mlp:hidden=16"


def _published(path: Path) -> None:
    """A publisher's checkpoint of the same backbone with its own 5-class classifier."""
    from safetensors.torch import save_file

    from flsilo.models.registry import build_model

    torch.manual_seed(3)
    state = build_model(MLP, (1, 8, 8), 5).state_dict()
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, str(path))


def test_start_provenance_is_in_the_package_manifest_and_shown_by_inspect(cli, tmp_path):
    from flsilo.format.artifact import scan_file

    checkpoint = tmp_path / "published.safetensors"
    _published(checkpoint)
    start = tmp_path / "start.safetensors"
    res = cli(
        "backbone", "import", checkpoint, "--model", MLP, "--classes", "0,1,2,3,4,5,6,7,8,9",
        "--input-shape", "1,8,8", "--normalize", "0.5/0.25", "--out", start, "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    provenance = json.loads(res.out)["provenance"]
    fed = build_federation(
        tmp_path / "fed", "closed-form+periodic:1", MLP,
        ("--init-weights", str(start), "--adapters", "lora:r=4"),
    )  # fmt: skip
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    recorded = scan_file(package0).manifest.model.start
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert recorded is not None and recorded.source.sha256 == digest
    assert recorded.spec == MLP and recorded.dropped == ("model.3.bias", "model.3.weight")
    assert recorded.normalize is not None and recorded.normalize.mean == (0.5,)
    assert recorded.libraries == provenance["libraries"] and recorded.libraries["torch"]
    shown = json.loads(cli("inspect", package0, "--json").out)["manifest"]["model"]["start"]
    assert shown == provenance
    text = cli("inspect", package0).out
    assert "start from" in text and digest in text and "lora:r=4" in text
    # the bundles and the next package carry it too (the model section is copied whole)
    assert scan_file(fed.bundles["site-a"]).manifest.model.start == recorded
    fed.carry()
    assert cli("aggregate", fed.hub).code == 0
    package1 = fed.hub / "packages" / "fed-r0001.safetensors"
    assert scan_file(package1).manifest.model.start == recorded
    base = load_file(str(package0))
    assert np.array_equal(base["1.weight"], load_file(str(start))["1.weight"])
    # the model card names the adapters and the published checkpoint
    card = cli(
        "report", package1, "--hub", fed.hub, "--out", tmp_path / "card",
        "--hub-fingerprint", fingerprint(fed.keys / "hub.pub"),
    )  # fmt: skip
    assert card.code == 0, card.err
    markdown = (tmp_path / "card" / "card.md").read_text()
    assert "lora:r=4" in markdown and "started from" in markdown and digest in markdown
    shown_card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert shown_card["federation"]["start"]["source"]["sha256"] == digest


def test_init_weights_without_provenance_records_none(cli, tmp_path):
    from flsilo.format.artifact import scan_file
    from flsilo.models.registry import build_model

    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    torch.manual_seed(4)
    save_file(build_model(MLP, (1, 8, 8), 10).state_dict(), str(plain))
    key = make_key(tmp_path / "hub-key")
    made = cli(
        "hub", "init", tmp_path / "hub", "--federation", "fed", "--model", MLP, "--classes",
        ",".join(str(d) for d in range(10)), "--input-shape", "1,8,8", "--key", key,
        "--schedule", "periodic:1", "--init-weights", plain,
    )  # fmt: skip
    assert made.code == 0, made.err
    package0 = tmp_path / "hub" / "packages" / "fed-r0000.safetensors"
    assert np.array_equal(load_file(str(package0))["1.weight"], load_file(str(plain))["1.weight"])
    assert scan_file(package0).manifest.model.start is None
    assert b'"start"' not in package0.read_bytes()[:4096]
