"""A backbone from elsewhere comes in as a ``module:factory`` plug-in plus ``--init-weights``.

The test stands in for torchvision/timm with the built-in resnet wrapped in a plug-in module,
and for the connected side's conversion with safetensors' own ``save_file``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import make_key

PLUGIN = '''
"""A site's own backbone: the built-in resnet, its head named for flsilo."""
from flsilo.models import resnet


def build(input_shape, num_classes, width=8):
    model = resnet.build(input_shape, num_classes, width=width, groups=4)
    model.flsilo_head = "fc"
    return model
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_backbone.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    return "my_backbone:build:width=8"


def _pretrained(spec: str, path: Path) -> dict[str, np.ndarray]:
    """What the connected side does: build the model, load real weights, save safetensors."""
    import torch
    from safetensors.torch import save_file

    from flsilo.models.registry import build_model

    torch.manual_seed(123)
    model = build_model(spec, (1, 8, 8), 10)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return {k: v.numpy() for k, v in state.items()}


def test_plugin_backbone_with_init_weights_starts_from_them(plugin, cli, tmp_path):
    start = _pretrained(plugin, tmp_path / "start.safetensors")
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", plugin,
        "--classes", ",".join(str(d) for d in range(10)), "--input-shape", "1,8,8",
        "--key", key, "--init-weights", tmp_path / "start.safetensors",
        "--freeze", "stem.*,stages.*", "--schedule", "closed-form",
    )  # fmt: skip
    assert res.code == 0, res.err
    package = tmp_path / "hub" / "packages" / "f-r0000.safetensors"
    tensors = load_file(str(package))
    assert sorted(tensors) == sorted(start)
    assert all(np.array_equal(tensors[k], start[k]) for k in start)
    info = json.loads(cli("inspect", package, "--json").out)
    assert "fc.weight" in json.dumps(info) and "my_backbone:build" in json.dumps(info)


def test_init_weights_of_another_architecture_are_refused(plugin, cli, tmp_path):
    _pretrained("resnet:width=4", tmp_path / "other.safetensors")
    key = make_key(tmp_path / "hub-key")
    res = cli(
        "hub", "init", tmp_path / "hub", "--federation", "f", "--model", plugin,
        "--classes", "a,b", "--input-shape", "1,8,8", "--key", key,
        "--init-weights", tmp_path / "other.safetensors",
    )  # fmt: skip
    assert res.code == 4
    assert "weights-mismatch" in res.err
    assert not (tmp_path / "hub").exists()
