"""flsilo reads a pickled PyTorch checkpoint in one place only: ``backbone import``."""

from __future__ import annotations

import re
from pathlib import Path

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
