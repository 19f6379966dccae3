"""``--task`` through the real files: hub init writes it into the plan and the package, a
site trains by it, and a site whose flsilo does not know the task refuses the package."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flsilo.format.artifact import scan_file
from flsilo.format.manifest import MANIFEST_KEY
from tests.conftest import build_federation, tree_digest

PLUGIN = "tests.plugin_task:TASK"


def _model(path: Path) -> dict[str, object]:
    model = json.loads(scan_file(path, data_digest=False).header.metadata[MANIFEST_KEY])["model"]
    assert isinstance(model, dict)
    return model


def test_a_plugin_task_trains_and_a_site_without_it_refuses(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = build_federation(tmp_path / "fed", extra=("--task", PLUGIN))
    assert 'task = "tests.plugin_task:TASK"' in (fed.hub / "federation.toml").read_text()
    package = fed.sites["site-b"] / "packages" / "fed-r0000.safetensors"
    assert _model(package)["task"] == {"name": PLUGIN, "thresholds": [], "charset": "",
                                       "max_length": 0}  # fmt: skip
    assert fed.bundles["site-a"].exists()  # trained by the plug-in's loss
    # built on classify, the plug-in inherits its formats: class folders too
    folder = tmp_path / "images"
    for label in ("3", "7"):
        (folder / label).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(folder / label / f"{k}.png")
    checked = cli("site", "check-data", fed.sites["site-a"], "--data", folder)
    assert checked.code == 0, checked.err
    assert "4 usable samples" in checked.out and "0 problems" in checked.err
    monkeypatch.setitem(sys.modules, "tests.plugin_task", None)  # this site lacks the plug-in
    monkeypatch.setattr("flsilo.tasks._loaded", {})
    before = tree_digest(fed.root)
    result = cli("train", package, "--site", fed.sites["site-b"], "--device", "cpu")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "error[unknown-task]" in lines[0]
    assert str(package) in lines[0] and "tests.plugin_task" in lines[0] and "hint:" in lines[0]
    assert tree_digest(fed.root) == before


def test_hub_init_refuses_a_task_it_cannot_load(tmp_path: Path, cli) -> None:
    from tests.conftest import make_key

    key = make_key(tmp_path / "hub")
    base = ["hub", "init", tmp_path / "h", "--federation", "f", "--model", "logreg",
            "--classes", "a,b", "--input-shape", "4", "--key", key]  # fmt: skip
    result = cli(*base, "--task", "regress")
    assert result.code == 2 and "not one of classify" in result.err
    result = cli(*base, "--task", "absent_pkg.tasks:TASK")
    assert result.code == 1 and "absent_pkg" in result.err and "install" in result.err
    assert not (tmp_path / "h").exists()


def test_a_plan_file_names_the_task(tmp_path: Path, cli) -> None:
    import tomllib

    from tests.conftest import make_key

    printed = cli("hub", "init", "--print-config").out
    assert 'task = "classify"' in printed and "thresholds = []" in printed
    assert "cnn, resnet, crnn, detector, torchvision:NAME," in printed  # every kind of model
    plan = tmp_path / "plan.toml"
    plan.write_text(
        printed.replace('task = "classify"', 'task = "multilabel"')
        .replace('federation = "my-federation"', 'federation = "chest"')
        .replace("thresholds = []", "thresholds = [0.5, 0.25]")
        .replace('classes = ["normal", "abnormal"]', 'classes = ["effusion", "nodule"]')
        # a small model: the printed plan's CNN on 64x64 images is a 4 MB package to sign
        .replace('model = "cnn"', 'model = "logreg"')
        .replace("input_shape = [1, 64, 64]", "input_shape = [1, 8, 8]")
    )
    assert 'model = "logreg"' in plan.read_text() and "[1, 8, 8]" in plan.read_text()
    key = make_key(tmp_path / "hub-key")
    made = cli("hub", "init", tmp_path / "hub", "--config", plan, "--key", key)
    assert made.code == 0, made.err
    written = tomllib.loads((tmp_path / "hub" / "federation.toml").read_text())
    assert written["plan"]["task"] == "multilabel"
    assert written["plan"]["thresholds"] == [0.5, 0.25]
    assert written["classes"] == ["effusion", "nodule"]
    package = tmp_path / "hub" / "packages" / "chest-r0000.safetensors"
    assert _model(package)["task"]["thresholds"] == [0.5, 0.25]
    shown = cli("inspect", package)
    assert "multilabel, thresholds [0.5, 0.25]" in shown.out
