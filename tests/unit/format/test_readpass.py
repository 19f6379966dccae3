"""One read, every digest: the pipelined reader hashes and copies exactly the bytes, in order.

A chunk is hashed and copied on the pool while the next one is read and checked; these
tests make every chunk go through the pool (tiny chunks, no size floor) so the hand-offs
between the two buffers, short reads into a buffer still being hashed, and failures in the
middle of a pass are all exercised.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flsilo.format import artifact, readpass
from flsilo.format.artifact import scan_file, scan_stream, sha256_file
from flsilo.format.readpass import ArtifactReader
from flsilo.format.tensorfile import RawTensor
from flsilo.signing.keys import generate_key
from tests.conftest import examples
from tests.hostile.test_corpus import bundle_manifest

settings_ = settings(
    max_examples=examples(12), suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KEY = generate_key()


def _digests(data: bytes) -> tuple[str, str]:
    start = 8 + int.from_bytes(data[:8], "little")
    return hashlib.sha256(data).hexdigest(), hashlib.sha256(data[start:]).hexdigest()


def _artifact(folder: Path, sizes: list[int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {
        f"t{i}": RawTensor.from_numpy(rng.standard_normal(n).astype(np.float32))
        for i, n in enumerate(sizes)
    }
    path = folder / "a.safetensors"
    artifact.write_artifact(path, tensors, bundle_manifest(), KEY)
    return path


@pytest.fixture(autouse=True)
def every_chunk_on_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readpass, "PARALLEL_MIN_BYTES", 0)


class ShortReads(io.BytesIO):
    """A stream whose ``readinto`` hands out at most ``most`` bytes: a pipe, a network share."""

    def __init__(self, data: bytes, most: int) -> None:
        super().__init__(data)
        self.most = most

    def readinto(self, b: object) -> int:  # type: ignore[override]
        return super().readinto(memoryview(b)[: self.most])  # type: ignore[arg-type]


@settings_
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    chunk=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_digests_and_copy_equal_hashlib(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    sizes: list[int],
    chunk: int,
    seed: int,
) -> None:
    monkeypatch.setattr(artifact, "CHUNK_BYTES", chunk * 64)  # many chunks per tensor
    folder = tmp_path_factory.mktemp("reader")
    path = _artifact(folder, sizes, seed)
    copy = folder / "copy.bin"
    with copy.open("wb") as out:
        scan = scan_file(path, copy_to=out)
    assert (scan.sha256, scan.data_sha256) == _digests(path.read_bytes())
    assert copy.read_bytes() == path.read_bytes()
    assert not scan.nonfinite


@settings_
@given(seed=st.integers(0, 2**32 - 1), most=st.integers(24, 400), chunk=st.integers(1, 8))
def test_short_reads_into_a_buffer_still_being_hashed(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    most: int,
    chunk: int,
) -> None:
    """A read that comes back short is finished into the same buffer: that buffer's first
    part must be hashed before the rest is read into it, and the digests stay exact."""
    monkeypatch.setattr(artifact, "CHUNK_BYTES", chunk * 64)
    data = _artifact(tmp_path_factory.mktemp("short"), [300, 5, 400], seed).read_bytes()
    reader = ArtifactReader(ShortReads(data, most), len(data))  # type: ignore[arg-type]
    scan = scan_stream(reader, Path("short.safetensors"))
    assert (scan.sha256, scan.data_sha256) == _digests(data)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000])
def test_sha256_file_reads_two_buffers_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(readpass, "CHUNK_BYTES", 64)
    path = tmp_path / "f.bin"
    path.write_bytes(np.random.default_rng(size).bytes(size))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


class FailingCopy(io.BytesIO):
    """A copy whose third write fails, as a full disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, b: object) -> int:  # type: ignore[override]
        self.writes += 1
        if self.writes == 3:
            raise OSError(28, "No space left on device")
        return super().write(b)  # type: ignore[arg-type]


def test_a_copy_that_fails_on_the_pool_fails_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifact, "CHUNK_BYTES", 256)
    data = _artifact(tmp_path, [1000, 1000], 1).read_bytes()
    out = FailingCopy()
    reader = ArtifactReader(io.BytesIO(data), len(data), copy_to=out)
    with pytest.raises(OSError, match="No space left"):
        scan_stream(reader, Path("copy.safetensors"))
    assert not reader._pending  # nothing still runs on the buffers once the error is out


def test_a_check_that_fails_waits_for_its_chunks_hash() -> None:
    """The caller may reuse the buffer once the error is out: its jobs are done by then."""
    data = bytes(range(256)) * 8
    reader = ArtifactReader(io.BytesIO(data), len(data), copy_to=io.BytesIO())
    buffer = memoryview(bytearray(512))

    def refuse(_chunk: memoryview) -> None:
        raise ValueError("refused")

    reader.readinto(buffer)
    with pytest.raises(ValueError, match="refused"):
        reader.readinto(memoryview(bytearray(512)), refuse)
    assert not reader._pending
    reader.drain()
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert reader.copy_to.getvalue() == data  # type: ignore[union-attr]


class SlowCopy(io.BytesIO):
    """A copy that takes its time before it takes the bytes, as a slow USB stick does."""

    def write(self, b: object) -> int:  # type: ignore[override]
        time.sleep(0.005)
        return super().write(b)  # type: ignore[arg-type]


def test_one_buffer_read_again_waits_for_its_last_chunk() -> None:
    """A caller that reads into one buffer over and over gets no overlap, and no torn chunk:
    the buffer is read into again only once its last chunk is copied and hashed."""
    data = np.random.default_rng(3).bytes(640)
    out = SlowCopy()
    reader = ArtifactReader(io.BytesIO(data), len(data), copy_to=out)
    buffer = memoryview(bytearray(64))
    while reader.readinto(buffer):
        pass
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert out.getvalue() == data


def test_a_file_that_grew_is_refused_once_its_last_chunk_is_copied() -> None:
    """The refusal of a stream longer than its stated size comes out with nothing still
    running on the buffers, the copy whole up to that size."""
    data = np.random.default_rng(5).bytes(300)
    out = SlowCopy()
    reader = ArtifactReader(io.BytesIO(data + b"x"), len(data), copy_to=out)
    buffer = [memoryview(bytearray(64)), memoryview(bytearray(64))]
    turn = 0
    while reader.readinto(buffer[turn]):
        turn ^= 1
    assert reader.grew()
    assert not reader._pending and out.getvalue() == data
