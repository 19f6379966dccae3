"""Model registry: built-ins build for any input, plug-ins load, digests pin the code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from flsilo.models.registry import build_model, code_digest, parse_spec
from flsilo.runtime.errors import UsageError


@pytest.mark.parametrize(
    "spec",
    [
        "logreg",
        "mlp",
        "mlp:hidden=16",
        "mlp:hidden=32x16,dropout=0.1",
        "cnn",
        "cnn:channels=8x16,hidden=32",
        "resnet",
        "resnet:width=8,blocks=2",
    ],
)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 17, 13), (1, 28, 28)])
def test_builtins_build_and_run(spec: str, shape: tuple[int, ...]) -> None:
    model = build_model(spec, shape, 5)
    assert model(torch.zeros(2, *shape)).shape == (2, 5)


def test_resnet_has_no_batchnorm_buffers() -> None:
    state = build_model("resnet", (3, 16, 16), 4).state_dict()
    assert not [k for k in state if "running" in k or "num_batches" in k]


def test_tabular_inputs() -> None:
    assert build_model("mlp", (13,), 3)(torch.zeros(4, 13)).shape == (4, 3)
    with pytest.raises(UsageError):
        build_model("cnn", (13,), 3)


@pytest.mark.parametrize(
    "spec", ["transformer", "mlp:hidden", "mlp:width=3", "nosuchmodule:make", "logreg:a=1:b=2"]
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(UsageError):
        build_model(spec, (1, 8, 8), 3)


def test_plugin_and_its_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def tiny(input_shape, num_classes, width=4):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "my_models:tiny:width=6"
    assert parse_spec(spec).kwargs == {"width": 6}
    assert build_model(spec, (1, 8, 8), 3)(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    before = code_digest(spec)
    (tmp_path / "my_models.py").write_text((tmp_path / "my_models.py").read_text() + "# changed\n")
    assert code_digest(spec) != before
    sys.modules.pop("my_models", None)
