"""``flsilo export``: a verified package as an ONNX model for deployment, checked against torch.

The package is verified first (nothing unverified is loaded), its model built with the local
code whose digest the package names, and exported with PyTorch's ONNX exporter (the
``export`` extra: onnx, onnxscript, onnxruntime) with a dynamic batch dimension. The
exported file's metadata names the package (file, sha256, federation, round), the model
spec, the classes and the preprocessing the model expects (the package's, or for a
version-2 final package, which names none, its parent's beside it). Before
anything is written, onnxruntime runs the exported model on seeded sample inputs: the
largest absolute logit difference from torch must be at most ``TOLERANCE`` and every
predicted class the same, or nothing is written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flsilo.format import manifest as mf
from flsilo.format.artifact import Verified, verify_file
from flsilo.fs.atomic import write_bytes
from flsilo.plans.preprocessing import model_preprocess
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import FlsiloError, UsageError, VerificationError
from flsilo.scoring.strings import greedy_paths
from flsilo.signing.trust import TrustPolicy
from site_kit.packagemodel import verified_model

TOLERANCE = 1e-4
SAMPLES = 16
FORMATS = ("onnx",)


@dataclass(frozen=True)
class Exported:
    path: Path
    package_sha256: str
    max_abs_diff: float
    samples: int
    preprocess_from: str | None
    metadata: dict[str, str]


EXTRA = ("onnx", "onnxscript", "onnxruntime")


def _extra_missing(name: str | None) -> UsageError:
    return UsageError(
        f"ONNX export needs the export extra ({name} is not installed)",
        code=Code.EXPORT_EXTRA,
        hint="pip install 'flsilo[export]' (onnx, onnxscript, onnxruntime)",
    )


def _preprocess_source(verified: Verified, trust: TrustPolicy) -> tuple[Any, str | None]:
    """The preprocessing the model expects and the file it came from: the package's own
    (every format-3 package names it), or for a version-2 final package, which carries no
    plan, its parent's (the file of the previous round beside it, verified likewise)."""
    own = model_preprocess(verified.manifest)
    if own is not None:
        return own, verified.path.name
    info = verified.manifest.package
    assert info is not None
    parent = verified.path.with_name(
        f"{verified.manifest.federation}-r{verified.manifest.round - 1:04d}.safetensors"
    )
    if not parent.exists():
        return None, None
    try:
        before = verify_file(parent, trust, expected_kind=mf.KIND_PACKAGE)
    except FlsiloError:
        return None, None
    if before.sha256 != info.parent_sha256:
        return None, None
    found = model_preprocess(before.manifest)
    return (found, parent.name) if found is not None else (None, None)


def _metadata(verified: Verified, preprocess: Any, source: str | None) -> dict[str, str]:
    m = verified.manifest
    return {
        "flsilo.package": verified.path.name,
        "flsilo.package_sha256": verified.sha256,
        "flsilo.federation": m.federation,
        "flsilo.round": str(m.round),
        "flsilo.model": m.model.spec,
        "flsilo.model_code_digest": m.model.code_digest,
        "flsilo.classes": json.dumps(list(m.model.classes)),
        **(
            {
                "flsilo.task": m.model.task_spec.name,
                "flsilo.charset": m.model.task_spec.charset,
                "flsilo.max_length": str(m.model.task_spec.max_length),
            }
            if m.model.task_spec.charset
            else {}
        ),
        "flsilo.input_shape": json.dumps(list(m.model.input_shape)),
        "flsilo.preprocess": json.dumps(mf.to_jsonable(preprocess), sort_keys=True)
        if preprocess is not None
        else "unknown",
        "flsilo.preprocess_from": source or "",
        "flsilo.version": m.software.get("flsilo", ""),
    }


def export_onnx(package: Path, trust: TrustPolicy, out: Path) -> Exported:
    """Verify ``package``, export its model to ``out`` (ONNX), check it, then write it.

    A missing extra is found before anything is read (by looking for the modules, not
    importing them); they are imported once the package has verified: about 0.5 s of CPU
    that a refused package does not pay.
    """
    for name in EXTRA:
        if importlib.util.find_spec(name) is None:
            raise _extra_missing(name)
    if out.exists():
        raise UsageError(
            "the output file exists", path=out, code=Code.EXISTS, hint="choose a new file name"
        )
    buffer = io.BytesIO()
    verified = verify_file(package, trust, expected_kind=mf.KIND_PACKAGE, copy_to=buffer)
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:  # found above, yet it does not import: a broken install
        raise _extra_missing(exc.name or "a module it needs") from exc
    model = verified_model(verified, buffer.getvalue(), merged=True).eval()
    preprocess, source = _preprocess_source(verified, trust)
    shape = verified.manifest.model.input_shape
    sample = torch.from_numpy(
        np.random.default_rng(int(verified.sha256[:8], 16))
        .standard_normal((SAMPLES, *shape))
        .astype(np.float32)
    )
    proto = _export(model, sample)
    for key, value in _metadata(verified, preprocess, source).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": sample.numpy()})[0]
    with torch.no_grad():
        want = model(sample).numpy()
    diff = float(np.max(np.abs(got - want)))
    if diff > TOLERANCE or not same_predictions(got, want):
        raise VerificationError(
            f"the exported model differs from the package's (largest logit difference "
            f"{diff:.2e}, at most {TOLERANCE:g} allowed); nothing was written",
            path=package,
            code=Code.EXPORT_MISMATCH,
            hint="report it with --verbose; the model may use an operation ONNX renders "
            "differently",
        )
    write_bytes(out, data)
    return Exported(
        out, verified.sha256, diff, SAMPLES, source, _metadata(verified, preprocess, source)
    )


def same_predictions(got: np.ndarray, want: np.ndarray) -> bool:
    """The same predicted class per sample, or for N x T x K sequence logits the same
    string per sample (best-path decoding: arg-max per step, repeats merged, blanks dropped)."""
    if got.ndim == 3:
        return greedy_paths(got.argmax(axis=2)) == greedy_paths(want.argmax(axis=2))
    return bool(np.array_equal(got.argmax(axis=1), want.argmax(axis=1)))


def _export(model: torch.nn.Module, sample: torch.Tensor) -> Any:
    """The ONNX graph of ``model`` with a dynamic batch (the exporter's chatter silenced)."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)
    assert program is not None
    return program.model_proto
