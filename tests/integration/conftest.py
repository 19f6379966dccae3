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
    runs whole (capture, decomposition, translation, onnxruntime's check)."""
    from torch.onnx._internal.exporter import _registration

    built = _registration.ONNXRegistry.from_torchlib.__func__  # type: ignore[attr-defined]

    def once(cls: type, opset_version: int = _registration._constants.TORCHLIB_OPSET) -> Any:
        key = (cls, opset_version)
        if key not in _ONNX_REGISTRIES:
            _ONNX_REGISTRIES[key] = built(cls, opset_version)
        return _ONNX_REGISTRIES[key]

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(once))
