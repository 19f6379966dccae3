"""flsilo reads a pickled PyTorch checkpoint in one place only: ``backbone import``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flsilo", "site_kit", "hub_kit", "sim_kit")
LOAD = re.compile(r"\btorch\.load\(|\bfrom torch import load\b|\bimport pickle\b|\bpickle\.load")
ALLOWED = {"flsilo/models/backbone.py"}


def test_torch_load_is_only_in_backbone_import_and_only_weights_only() -> None:
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = [line for line in path.read_text().splitlines() if LOAD.search(line)]
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert set(found) <= ALLOWED, f"torch.load or pickle outside backbone import: {found}"
    assert found, "backbone import reads weights-only checkpoints; the pattern must see it"
    for line in found["flsilo/models/backbone.py"]:
        assert "weights_only=True" in line, line


class Whole:
    """Stands for a whole model saved with ``torch.save(model)``: a class to unpickle."""


def test_a_pickled_object_or_a_cut_checkpoint_is_one_plain_line(tmp_path: Path) -> None:
    """torch's refusal is a page of advice to load the file with its code after all; flsilo
    says what the file is and what to do on the connected machine."""
    import torch

    from flsilo.models.backbone import read_checkpoint
    from flsilo.runtime.errors import MalformedInputError

    torch.save({"model": Whole(), "epoch": 3}, tmp_path / "whole.pth")
    with pytest.raises(MalformedInputError) as caught:
        read_checkpoint(tmp_path / "whole.pth")
    err = caught.value
    assert err.code == "bad-checkpoint"
    assert f"pickled Python object ({__name__}.Whole)" in err.message
    assert "weights_only" not in err.one_line() and "\n" not in err.one_line()
    assert "model.state_dict()" in err.hint
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "full.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes((tmp_path / "full.pth").read_bytes()[:2000])
    with pytest.raises(MalformedInputError) as caught:
        read_checkpoint(cut)
    assert caught.value.code == "bad-checkpoint" and "\n" not in caught.value.one_line()
    assert "download it again" in caught.value.hint
    assert read_checkpoint(tmp_path / "full.pth")["w"].shape == (64, 64)


def test_a_checkpoint_for_other_image_channels_says_the_input_shape() -> None:
    """An RGB backbone for a grey federation: the first convolution differs only in its
    input channels, and the hint is --input-shape 3,H,W, not another spec."""
    from flsilo.models.backbone import map_state
    from flsilo.models.registry import build_model
    from flsilo.runtime.errors import MalformedInputError

    rgb = build_model("cnn", (3, 8, 8), 2).state_dict()
    grey = build_model("cnn", (1, 8, 8), 2)
    with pytest.raises(MalformedInputError) as caught:
        map_state(Path("rgb.safetensors"), grey, rgb, "cnn")
    err = caught.value
    assert err.code == "weights-mismatch" and "in the checkpoint" in err.message
    assert "trained on 3-channel images" in err.hint and "--input-shape 3,H,W" in err.hint
