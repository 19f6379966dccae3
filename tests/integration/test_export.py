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
]
# A real export (torch's ONNX exporter, then onnxruntime) costs about 1 s of CPU the first
# time in a process and 0.3 s after: the two tests that export run in the slow tier (CI
# runs it on every change), and the default tier checks, without exporting, what flsilo
# itself decides: the refusals before any export, the file's metadata, the comparison.


def test_export_metadata_names_the_package_and_its_preprocessing(federation: Federation) -> None:
    """What the exported file's metadata holds, from the verified package (the default
    tier's twin of the export test below)."""
    from flsilo.format.artifact import verify_file
    from flsilo.signing.trust import AllowedSigners
    from site_kit.export import _metadata, _preprocess_source

    package = federation.sites["site-a"] / "packages" / "fed-r0000.safetensors"
    trust = AllowedSigners.load(federation.hub / "allowed_signers")
    verified = verify_file(package, trust, expected_kind="package")
    preprocess, source = _preprocess_source(verified, trust)
    meta = _metadata(verified, preprocess, source)
    assert meta["flsilo.package"] == package.name and source == package.name
    assert meta["flsilo.package_sha256"] == verified.sha256
    assert json.loads(meta["flsilo.classes"]) == [str(i) for i in range(10)]
    assert json.loads(meta["flsilo.preprocess"])["resize"] == "stretch"
    assert json.loads(meta["flsilo.input_shape"]) == [1, 8, 8] and meta["flsilo.round"] == "0"


def test_same_predictions_compares_classes_and_decoded_strings() -> None:
    from site_kit.export import same_predictions

    logits = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    assert same_predictions(logits + 0.05, logits)
    assert not same_predictions(logits[::-1], logits)
    steps = np.zeros((1, 4, 3), dtype=np.float32)  # N x T x K: blank 0, then classes
    steps[0, [0, 1, 2, 3], [1, 1, 0, 2]] = 1.0  # "a a - b" decodes to "ab"
    again = steps.copy()
    again[0, 1] = [1.0, 0.0, 0.0]  # "a - - b": also "ab"
    assert same_predictions(again, steps)
    again[0, 3] = [0.0, 1.0, 0.0]  # "a - - a": "aa"
    assert not same_predictions(again, steps)


@pytest.mark.slow
@pytest.mark.usefixtures("onnx_registry_once")
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


@pytest.mark.slow
@pytest.mark.usefixtures("onnx_registry_once")
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
