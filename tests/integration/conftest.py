"""Fixtures shared by the integration tests (the whole suite's are in tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

_ONNX_REGISTRIES: dict[tuple[object, int], Any] = {}


@pytest.fixture
def onnx_registry_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch's ONNX exporter builds its table of ATen-to-ONNX functions again for every
    export (``ONNXRegistry.from_torchlib``: about half a second of CPU, more than exporting
    a small model); a test that exports gets the table the run's first export built, as one
    ``flsilo export`` process does. The table is the exporter's own: every export still
    runs whole (capture, decomposition, translation, onnxruntime's check). Without the export
    extra the test is skipped, as its own check for the extra would."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError as exc:  # onnx, onnxscript or onnx_ir is missing
        pytest.skip(f"the export extra ({exc.name}) is not installed")

    built = _registration.ONNXRegistry.from_torchlib.__func__  # type: ignore[attr-defined]

    def once(cls: type, opset_version: int = _registration._constants.TORCHLIB_OPSET) -> Any:
        key = (cls, opset_version)
        if key not in _ONNX_REGISTRIES:
            _ONNX_REGISTRIES[key] = built(cls, opset_version)
        return _ONNX_REGISTRIES[key]

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(once))
