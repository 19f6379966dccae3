"""``flsilo backbone import``: checkpoints made by timm's and torchvision's own constructors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import hub_root, make_key

pytestmark = pytest.mark.vision
REASON = "runs in the vision tier, whose environment (constraints-vision.txt) has it"
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision", reason=REASON)
timm = pytest.importorskip("timm", reason=REASON)

from safetensors.torch import save_file  # noqa: E402

from tests.integration.test_vision_models import (  # noqa: E402
    DIGITS,
    RESNET18_BACKBONE,
    _aggregate,
    vision_federation,
)


def _published_resnet18(path: Path) -> dict[str, np.ndarray]:
    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()  # ImageNet's 1000 classes
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return {k: v.numpy() for k, v in state.items()}


def _import(cli, checkpoint: Path, spec: str, out: Path, *extra: str):
    return cli(
        "backbone", "import", checkpoint, "--model", spec, "--classes", DIGITS,
        "--input-shape", "3,16,16", "--out", out, *extra,
    )  # fmt: skip


def test_torchvision_checkpoint_to_a_one_trip_closed_form_federation(cli, tmp_path):
    published = _published_resnet18(tmp_path / "resnet18.safetensors")
    res = _import(
        cli,
        tmp_path / "resnet18.safetensors",
        "torchvision:resnet18",
        tmp_path / "start.safetensors",
        "--json",
    )
    assert res.code == 0, res.err
    provenance = json.loads(res.out)["provenance"]
    start = load_file(str(tmp_path / "start.safetensors"))
    assert sorted(start) == sorted(published)
    assert start["fc.weight"].shape == (10, 512) and published["fc.weight"].shape == (1000, 512)
    assert all(np.array_equal(start[k], published[k]) for k in published if not k.startswith("fc."))
    import hashlib

    digest = hashlib.sha256((tmp_path / "resnet18.safetensors").read_bytes()).hexdigest()
    assert provenance["source"]["sha256"] == digest
    assert provenance["dropped"] == ["fc.bias", "fc.weight"]
    assert provenance["normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert provenance["code"].startswith("torchvision==") and provenance["libraries"]["torch"]
    record = json.loads((tmp_path / "start.provenance.json").read_text())
    assert record == provenance

    fed = vision_federation(
        tmp_path / "fed", "torchvision:resnet18", "closed-form",
        "--init-weights", str(tmp_path / "start.safetensors"), "--freeze", RESNET18_BACKBONE,
    )  # fmt: skip
    package0 = fed.hub / "packages" / "fed-r0000.safetensors"
    assert all(np.array_equal(load_file(str(package0))[k], v) for k, v in start.items())
    shown = json.loads(cli("inspect", package0, "--json").out)
    assert "0.485" in json.dumps(shown) and "0.229" in json.dumps(shown)  # the plan normalises
    init = json.loads((fed.hub / "events.jsonl").read_text().splitlines()[0])
    assert init["start"]["source"]["sha256"] == digest
    from flsilo.format.artifact import scan_file

    start_record = scan_file(package0).manifest.model.start  # in the signed package too
    assert start_record is not None and start_record.source.sha256 == digest
    assert start_record.libraries["torchvision"] == provenance["libraries"]["torchvision"]
    final = _aggregate(cli, fed)
    assert load_file(str(final))["fc.weight"].shape == (10, 512)
    audit = cli("audit", fed.hub, *hub_root(fed.hub), "--replay", "--json")
    assert audit.code == 0, audit.out


def test_timm_checkpoint_with_a_training_prefix_maps_and_takes_timms_normalisation(cli, tmp_path):
    torch.manual_seed(3)
    model = timm.create_model("resnet10t", pretrained=False)
    state = {f"module.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "resnet10t.safetensors"))
    res = _import(
        cli,
        tmp_path / "resnet10t.safetensors",
        "timm:resnet10t",
        tmp_path / "s.safetensors",
        "--json",
    )
    assert res.code == 0, res.err
    provenance = json.loads(res.out)["provenance"]
    cfg = model.pretrained_cfg
    assert provenance["normalize"] == {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    start = load_file(str(tmp_path / "s.safetensors"))
    assert np.array_equal(start["conv1.0.weight"], state["module.conv1.0.weight"].numpy())


def test_weights_only_torch_checkpoint_is_read_and_a_pickled_object_is_refused(cli, tmp_path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "r18.pth")
    res = _import(cli, tmp_path / "r18.pth", "torchvision:resnet18", tmp_path / "a.safetensors")
    assert res.code == 0, res.err
    assert np.array_equal(
        load_file(str(tmp_path / "a.safetensors"))["conv1.weight"], state["conv1.weight"].numpy()
    )
    torch.save({"model": torchvision.models.resnet18(weights=None)}, tmp_path / "whole.pth")
    res = _import(cli, tmp_path / "whole.pth", "torchvision:resnet18", tmp_path / "b.safetensors")
    assert res.code == 4 and "error[bad-checkpoint]" in res.err
    assert not (tmp_path / "b.safetensors").exists()


def test_a_checkpoint_of_another_architecture_is_one_line(cli, tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.resnet34(weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r34.safetensors"))
    res = _import(
        cli, tmp_path / "r34.safetensors", "torchvision:resnet18", tmp_path / "s.safetensors"
    )
    assert res.code == 4 and "error[weights-mismatch]" in res.err
    assert "the model lacks" in res.err and "torchvision:resnet18" in res.err
    assert len(res.err.strip().splitlines()) <= 2 and not (tmp_path / "s.safetensors").exists()
    wide = torchvision.models.wide_resnet50_2(weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in wide.items()}, str(tmp_path / "w.safetensors"))
    res = _import(
        cli, tmp_path / "w.safetensors", "torchvision:resnet50", tmp_path / "s.safetensors"
    )
    assert res.code == 4 and "has shape" in res.err


def test_hub_init_refuses_a_start_file_imported_for_another_spec(cli, tmp_path):
    _published_resnet18(tmp_path / "r18.safetensors")
    assert (
        _import(
            cli, tmp_path / "r18.safetensors", "torchvision:resnet18", tmp_path / "s.safetensors"
        ).code
        == 0
    )
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", "torchvision:resnet18:norm=group",
        "--classes", DIGITS, "--input-shape", "3,16,16", "--key", key,
        "--init-weights", tmp_path / "s.safetensors",
    )  # fmt: skip
    assert res.code == 2 and "error[init-weights]" in res.err and "imported for model" in res.err
    assert not (tmp_path / "hub").exists()
