"""torchvision's detection models under ``--task detect`` (the vision tier): built with no
weights, trained through the real files, aggregated, evaluated and replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import hub_root
from tests.integration.test_detect import detect_federation, scenes

pytestmark = pytest.mark.vision
REASON = "runs in the vision tier, whose environment (constraints-vision.txt) has it"
torchvision = pytest.importorskip("torchvision", reason=REASON)

SSDLITE = "torchvision:ssdlite320_mobilenet_v3_large"


def test_ssdlite_federation_round(tmp_path: Path, cli) -> None:
    fed = detect_federation(tmp_path / "fed", SSDLITE, shape="3,64,64", size=64)
    fed.carry()
    result = cli("aggregate", fed.hub, "--server-optimizer", "fedadam", "--json")
    assert result.code == 0, result.err
    package = fed.hub / "packages" / "fed-r0001.safetensors"
    result = cli("inspect", package, "--json")
    assert "torchvision==0.29.1:ssdlite320_mobilenet_v3_large" in result.out
    test = scenes(tmp_path / "test", 3, seed=5, size=64)
    result = cli("evaluate", package, "--hub", fed.hub, "--data", test, "--data-format", "yolo",
                 "--json")  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert 0.0 <= report["map50"] <= 1.0 and report["samples"] == 3
    assert cli("audit", fed.hub, *hub_root(fed.hub), "--replay").code == 0


def test_mask_and_keypoint_models_are_refused(tmp_path: Path, cli) -> None:
    from tests.conftest import make_key

    key = make_key(tmp_path / "hub")
    result = cli("hub", "init", tmp_path / "h", "--federation", "f", "--task", "detect",
                 "--model", "torchvision:maskrcnn_resnet50_fpn", "--classes", "a,b",
                 "--input-shape", "3,64,64", "--key", key)  # fmt: skip
    assert result.code == 2 and "mask or keypoint" in result.err and "hint:" in result.err
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fcos_resnet50_fpn"])
def test_dp_sgd_refuses_torchvision_detectors(tmp_path: Path, cli, name: str) -> None:
    """Their losses are one figure per batch: no per-image gradient to clip. Refused at hub
    init before the BatchNorm rule (no freezing would help), and by the site's loss."""
    import numpy as np

    from flsilo.models.registry import build_model
    from flsilo.runtime.errors import UsageError
    from flsilo.tasks import load_task
    from tests.conftest import make_key

    key = make_key(tmp_path / "hub")
    result = cli("hub", "init", tmp_path / "h", "--federation", "f", "--task", "detect",
                 "--model", f"torchvision:{name}", "--classes", "a,b",
                 "--input-shape", "3,64,64", "--key", key,
                 "--dp-noise-multiplier", "1.0", "--dp-budget", "3")  # fmt: skip
    assert result.code == 2 and "error[dp-model]" in result.err, result.err
    assert "one loss for the whole batch" in result.err and "--model detector" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "h").exists()
    task = load_task("detect")
    model = build_model(f"torchvision:{name}", (3, 64, 64), 2)
    y = task.collate([np.array([[0, 0.1, 0.1, 0.6, 0.6]], dtype=np.float32)])
    with pytest.raises(UsageError, match="one loss for the whole batch") as caught:
        task.loss(model, torch.zeros(1, 3, 64, 64), y, "sum")
    assert caught.value.code == "dp-model"
