"""Move weights between torch modules and safetensors bytes (only ever after verification)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from safetensors.torch import load as load_safetensors_bytes

from flsilo.format.tensorfile import RawTensor
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

ST_DTYPE = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def state_to_raw(state: Mapping[str, torch.Tensor]) -> dict[str, RawTensor]:
    """A state dict as little-endian bytes per tensor, in safetensors dtypes."""
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy()
        out[name] = RawTensor(ST_DTYPE[t.dtype], tuple(t.shape), raw.data.cast("B"))
    return out


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Tensors of a verified artifact, read by the safetensors library (never pickle)."""
    return load_safetensors_bytes(data)


def load_weights(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Load exactly the model's state: same names, shapes and dtypes, or a clear error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise MalformedInputError(
            f"weights do not fit the model: {what}",
            path=source,
            code=Code.WEIGHTS_MISMATCH,
            hint="the model spec and the weights come from different models",
        )
    for name, value in expected.items():
        got = tensors[name]
        if got.shape != value.shape or got.dtype != value.dtype:
            raise MalformedInputError(
                f"tensor {name!r} is {got.dtype} {tuple(got.shape)}, the model needs "
                f"{value.dtype} {tuple(value.shape)}",
                path=source,
                code=Code.WEIGHTS_MISMATCH,
                hint="the model spec and the weights come from different models",
            )
    model.load_state_dict(dict(tensors), strict=True)
