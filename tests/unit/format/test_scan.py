"""One pass over an artifact counts every tensor's NaN and infinite values, in tensor order,
and hashes every byte, however the data section is cut into reads."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
import pytest

from flsilo.format import artifact
from flsilo.format import manifest as mf
from flsilo.format.readpass import ArtifactReader
from flsilo.format.tensorfile import (
    NUMPY_DTYPE,
    RawTensor,
    build_header,
    nonfinite_count,
    read_header,
)
from flsilo.runtime.codes import Code
from flsilo.runtime.errors import MalformedInputError

BUNDLE = (
    Path(__file__).resolve().parents[2]
    / "fixtures/golden_round/bundles/fed-r0000-site-a.safetensors"
)
BAD = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def _metadata() -> dict[str, str]:
    with BUNDLE.open("rb") as fh:
        header, _ = read_header(fh, BUNDLE.stat().st_size, str(BUNDLE))
    return header.metadata


def _tensors(rng: random.Random) -> dict[str, RawTensor]:
    tensors = {}
    for i in range(rng.randint(1, 12)):
        dtype = rng.choice(["F32", "F32", "F16", "BF16", "F64", "I32", "U8"])
        size = rng.choice([0, 1, 3, 8, 40, 300])
        raw = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(size)
        if dtype in BAD and size and rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                raw[rng.randrange(size)] = rng.choice([np.nan, np.inf, -np.inf])
        values = raw.astype(BAD.get(dtype, np.float32))
        if dtype == "BF16":
            bits = values.astype(np.float32).view(np.uint32) >> 16
            if size and rng.random() < 0.5:
                bits[rng.randrange(size)] = 0x7FC0  # a NaN
            values = bits.astype(np.uint16)
        elif dtype not in BAD:
            values = (raw * 100).astype(NUMPY_DTYPE[dtype])
        tensors[f"t{i}"] = RawTensor.from_numpy(values.reshape(-1), dtype)
    return tensors


def _file(tensors: dict[str, RawTensor], metadata: dict[str, str]) -> bytes:
    header, infos = build_header({n: (t.dtype, t.shape) for n, t in tensors.items()}, metadata)
    return header + b"".join(bytes(tensors[i.name].data) for i in infos)


def _expected(tensors: dict[str, RawTensor], data: bytes) -> tuple[list[tuple[str, int]], str]:
    _, infos = build_header({n: (t.dtype, t.shape) for n, t in tensors.items()}, {})
    counts = [(i.name, nonfinite_count(i.dtype, tensors[i.name].data)) for i in infos]
    return [(n, c) for n, c in counts if c], hashlib.sha256(data).hexdigest()


class ShortReads(io.RawIOBase):
    """A stream whose ``readinto`` hands back at most 5 bytes a call (``read`` is whole)."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self.inner.read(size)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        return self.inner.readinto(view[:5])


@pytest.mark.parametrize("chunk", [8, 64, artifact.CHUNK_BYTES])
def test_counts_and_digests_do_not_depend_on_how_the_data_is_read(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifact, "CHUNK_BYTES", chunk)
    rng = random.Random(chunk)
    metadata = _metadata()
    found_bad = 0
    for _ in range(12):
        tensors = _tensors(rng)
        data = _file(tensors, metadata)
        counts, sha256 = _expected(tensors, data)
        for stream in (io.BytesIO(data), ShortReads(data)):
            scan = artifact.scan_stream(ArtifactReader(stream, len(data)), Path("x"))  # type: ignore[arg-type]
            assert list(scan.nonfinite.items()) == counts
            assert scan.sha256 == sha256
        found_bad += bool(counts)
    assert found_bad >= 3


def test_a_file_that_ends_early_is_said_to_have_shrunk() -> None:
    tensors = {"w": RawTensor.from_numpy(np.ones(64, dtype=np.float32))}
    data = _file(tensors, _metadata())
    with pytest.raises(MalformedInputError) as refused:
        artifact.scan_stream(ArtifactReader(io.BytesIO(data[:-10]), len(data)), Path("x"))
    assert refused.value.code == Code.TRUNCATED


def test_the_manifest_of_the_fixture_is_read() -> None:
    assert mf.MANIFEST_KEY in _metadata()
