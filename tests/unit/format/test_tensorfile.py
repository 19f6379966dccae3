"""The canonical writer and the strict reader agree; dtype conversions are exact."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flsilo.format.tensorfile import (
    RawTensor,
    bf16_to_f32,
    build_header,
    f32_to_bf16,
    nonfinite_count,
    parse_header,
    read_header,
)
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError
from tests.conftest import examples

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "U8": np.uint8}


@st.composite
def tensor_sets(draw):
    names = draw(
        st.lists(st.text("abcdefgh._", min_size=1, max_size=6), min_size=1, max_size=5, unique=True)
    )
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(sorted(DTYPES)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        array = draw(
            hnp.arrays(
                DTYPES[dtype],
                shape,
                elements=hnp.from_dtype(
                    np.dtype(DTYPES[dtype]), allow_nan=False, allow_infinity=False
                ),
            )
        )
        out[name] = array
    return out


@settings(max_examples=examples(60))
@given(tensor_sets())
def test_written_files_parse_back_exactly(tensors) -> None:
    raw = {name: RawTensor.from_numpy(a) for name, a in tensors.items()}
    header_bytes, infos = build_header({n: (t.dtype, t.shape) for n, t in raw.items()}, {"k": "v"})
    assert (len(header_bytes) - 8) % 8 == 0
    blob = header_bytes + b"".join(bytes(raw[i.name].data) for i in infos)
    header, prefix = read_header(io.BytesIO(blob), len(blob), "mem")
    assert prefix == header_bytes
    assert header.metadata == {"k": "v"}
    for info in header.tensors:
        got = np.frombuffer(
            blob, dtype=DTYPES[info.dtype], count=info.numel, offset=header.data_start + info.begin
        )
        np.testing.assert_array_equal(got.reshape(info.shape), tensors[info.name])


def test_safetensors_library_reads_what_we_write(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    raw = {
        "b": RawTensor.from_numpy(np.arange(3, dtype=np.int64)),
        "a": RawTensor.from_numpy(np.ones((2, 2), np.float32)),
    }
    header_bytes, infos = build_header({n: (t.dtype, t.shape) for n, t in raw.items()}, {})
    (tmp_path / "x.safetensors").write_bytes(
        header_bytes + b"".join(bytes(raw[i.name].data) for i in infos)
    )
    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert loaded["b"].tolist() == [0, 1, 2] and loaded["a"].shape == (2, 2)


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=50))
def test_bf16_round_trip_is_nearest(values) -> None:
    import torch

    f32 = np.array(values, dtype=np.float32)
    ours = f32_to_bf16(f32)
    theirs = torch.from_numpy(f32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        bf16_to_f32(ours),
        torch.from_numpy(theirs.view(np.int16)).view(torch.bfloat16).float().numpy(),
    )


def test_nonfinite_counts_every_float_dtype() -> None:
    assert nonfinite_count("F32", np.array([1, np.nan, np.inf, -np.inf], np.float32).tobytes()) == 3
    assert nonfinite_count("F64", np.array([1, np.nan], np.float64).tobytes()) == 1
    assert nonfinite_count("F16", np.array([1, np.inf], np.float16).tobytes()) == 1
    assert nonfinite_count("BF16", np.array([0x3F80, 0x7FC0, 0xFF80], np.uint16).tobytes()) == 2
    assert nonfinite_count("I32", os.urandom(64)) == 0


def test_a_dtype_that_is_not_a_string_is_refused_as_unsupported() -> None:
    for dtype in ("[]", '{"F32": 1}', "4", "null"):
        header = f'{{"w":{{"dtype":{dtype},"shape":[1],"data_offsets":[0,4]}}}}'.encode()
        with pytest.raises(MalformedInputError) as refused:
            parse_header(header, 8 + len(header) + 4, "x.safetensors")
        assert refused.value.code == Code.BAD_DTYPE
        assert "unsupported dtype" in refused.value.message
