"""A verified package's model, built with the local code its manifest pins."""

from __future__ import annotations

import torch

from flsilo.format.artifact import Verified
from flsilo.models import adapters
from flsilo.models.registry import build_model, code_mismatch
from flsilo.models.torchio import load_weights, tensors_from_bytes
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import PolicyError
from flsilo.tasks import output_size


def verified_model(verified: Verified, data: bytes, *, merged: bool = False) -> torch.nn.Module:
    """The package's model: its code checked, weights loaded, adapters attached or ``merged``."""
    info = verified.manifest.model
    mismatch = code_mismatch(info.spec, info.code_digest)
    if mismatch is not None:
        raise PolicyError(
            mismatch[0], path=verified.path, code=Code.MODEL_CODE_MISMATCH, hint=mismatch[1]
        )
    model = build_model(info.spec, info.input_shape, output_size(info.task_spec, info.classes))
    tensors = tensors_from_bytes(data)
    adapters.apply_package_adapters(model, info.adapters, tensors, verified.path)  # if any
    load_weights(model, tensors, str(verified.path))
    return adapters.merge(model) if merged else model
