"""``flsilo export --format onnx``: a verified package as ONNX, checked with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Federation, needs, tree_digest

pytestmark = [
    needs("onnx", reason="the export extra (onnx) is not installed"),
    needs("onnxruntime", reason="the export extra (onnxruntime) is not installed"),
    pytest.mark.usefixtures("onnx_registry_once"),
]


def test_export_writes_a_checked_model_with_its_provenance(
    federation: Federation, cli, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    site = federation.sites["site-a"]
    package = site / "packages" / "fed-r0000.safetensors"
    before = tree_digest(site)
    out = tmp_path / "model.onnx"
    result = cli("export", package, "--site", site, "--out", out, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["max_abs_diff"] <= 1e-4 and doc["samples"] == 16
    model = onnx.load(out)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["flsilo.package_sha256"] == doc["package_sha256"]
    assert json.loads(meta["flsilo.classes"]) == [str(i) for i in range(10)]
    assert json.loads(meta["flsilo.preprocess"])["resize"] == "stretch"
    # the file runs on its own, on any batch size, with the model's answers
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    assert session.run(None, {"input": x})[0].shape == (5, 10)
    assert tree_digest(site) == before


def test_export_refuses_what_does_not_verify_and_writes_nothing(
    federation: Federation, cli, tmp_path: Path
) -> None:
    package = federation.hub / "packages" / "fed-r0000.safetensors"
    out = tmp_path / "model.onnx"
    stranger = cli("export", package, "--key", federation.keys / "site-a.pub", "--out", out)
    assert stranger.code == 3 and not out.exists()
    none = cli("export", package, "--out", out)
    assert none.code == 2 and not out.exists()
    fmt = cli("export", package, "--hub", federation.hub, "--out", out, "--format", "tflite")
    assert fmt.code == 2 and "onnx" in fmt.err


def test_an_export_that_differs_from_torch_is_not_written(
    federation: Federation, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import site_kit.export as export

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no exported model can be that close
    out = tmp_path / "model.onnx"
    site = federation.sites["site-a"]
    result = cli(
        "export", site / "packages" / "fed-r0000.safetensors", "--site", site, "--out", out
    )
    assert result.code == 3 and "export-mismatch" in result.err and not out.exists()


def test_without_the_extra_the_hint_names_it(
    federation: Federation, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    site = federation.sites["site-a"]
    result = cli(
        "export", site / "packages" / "fed-r0000.safetensors", "--site", site,
        "--out", tmp_path / "m.onnx",
    )  # fmt: skip
    assert result.code == 2 and "flsilo[export]" in result.err
